"""`unirl plot` (learning curves: mean and min-max band over seeds) and `unirl bench --plot`."""
import json
import os

import numpy as np
import pytest

from conftest import run_cli

pytest.importorskip("matplotlib")


def fake_run(folder, seed, returns, steps_per_iter=100, secs_per_iter=0.5, config=None):
    os.makedirs(folder, exist_ok=True)
    cfg = {"env": "CartPole-v1", "lr": 0.003, "seed": seed, **(config or {})}
    json.dump({"run": "PPO", "config": cfg, "stop": {}}, open(os.path.join(folder, "params.json"), "w"))
    with open(os.path.join(folder, "result.json"), "w") as f:
        for i, r in enumerate(returns, 1):
            f.write(json.dumps({"iteration": i, "timesteps_total": i * steps_per_iter,
                                "time_total_s": i * secs_per_iter, "episode_return_mean": r}) + "\n")
    return str(folder)


def png_ok(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000


def test_band_is_mean_min_max_on_the_common_range(tmp_path):
    from unirl.plot import band, load_run

    a = load_run(fake_run(tmp_path / "a", 0, [10, 20, 30, 40]))
    b = load_run(fake_run(tmp_path / "b", 1, [30, 40, 50], secs_per_iter=1.0))
    grid, mean, lo, hi = band([a, b], "timesteps_total", "episode_return_mean", points=3)
    assert grid.tolist() == [100, 200, 300]  # the range both runs cover
    assert mean.tolist() == [20, 30, 40] and lo.tolist() == [10, 20, 30] and hi.tolist() == [30, 40, 50]
    grid, mean, lo, hi = band([a, b], "time_total_s", "episode_return_mean", points=3)
    assert grid.tolist() == [1.0, 1.5, 2.0]  # b's clock: 1 s per iteration; a's: 0.5 s
    assert hi.tolist() == [30, 35, 40] and lo.tolist() == [20, 30, 40]


def test_nan_returns_before_the_first_episode_are_skipped(tmp_path):
    from unirl.plot import band, load_run

    a = load_run(fake_run(tmp_path / "a", 0, [float("nan"), 20, 30]))
    grid, mean, _, _ = band([a], "timesteps_total", "episode_return_mean", points=2)
    assert grid.tolist() == [200, 300] and mean.tolist() == [20, 30]


def test_runs_group_by_config_without_seed(tmp_path):
    from unirl.plot import group_runs, load_run

    runs = [load_run(fake_run(tmp_path / f"r{s}", s, [1, 2])) for s in (0, 1)]
    runs.append(load_run(fake_run(tmp_path / "other", 0, [1, 2], config={"lr": 0.001})))
    groups = group_runs(runs)
    assert [len(g) for _, g in groups] == [2, 1]
    assert groups[0][0] == "PPO CartPole-v1 lr=0.003 (2 runs, seeds 0, 1)"
    assert groups[1][0] == "PPO CartPole-v1 lr=0.001 (1 run, seeds 0)"


def test_unirl_plot_writes_png_from_folder_of_runs(tmp_path):
    for s in (0, 1, 2):
        fake_run(tmp_path / "runs" / f"seed{s}", s, list(np.linspace(10, 400 + 20 * s, 30)))
    out = tmp_path / "curves.png"
    res = run_cli("plot", str(tmp_path / "runs"), "--output", str(out), timeout=120)
    assert res.returncode == 0, res.stderr
    assert "3 runs, seeds 0, 1, 2" in res.stdout and "final mean episode_return_mean 420.0" in res.stdout
    png_ok(out)
    res = run_cli("plot", str(tmp_path / "runs" / "seed0"), "--output", str(out), "--x", "time", timeout=120)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "is not a directory"),
    (["{empty}"], "holds no run"),
    (["{run}", "--metric", "nope"], "has no result key `nope`"),
    (["{run}", "--output", "{missing}/x.png"], "does not exist"),
    (["{run}", "--output", "{empty}"], "cannot write"),
])
def test_bad_plot_inputs_are_one_line_errors(tmp_path, args, message):
    run = fake_run(tmp_path / "run", 0, [1, 2])
    os.makedirs(tmp_path / "empty")
    names = {"missing": str(tmp_path / "missing"), "empty": str(tmp_path / "empty"), "run": run}
    res = run_cli("plot", *[a.format(**names) for a in args], timeout=120)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_bench_plot_draws_frameworks_and_backends(tmp_path):
    from unirl.benchmarks.plot import plot_report

    fw = [{"framework": f, "learner_samples_per_s": v, "learner_vs_torch": v / 1e5, "act_1_us": 50.0 * i,
           "act_64_us": 60.0 * i, "act_1_vs_torch": float(i), "act_64_vs_torch": float(i)}
          for i, (f, v) in enumerate([("torch", 1e5), ("tf", 1.1e5), ("jax", 2e5)], 1)]
    be = [{"backend": b, "round_trip_us": rt, "send_10mb_to_4_ms": 5.0 * i, "sampling_1_worker_steps_per_s": 7e4,
           "sampling_2_workers_steps_per_s": 1.2e5, "round_trip_us_vs_local": rt, "send_10mb_to_4_ms_vs_local": i,
           "sampling_1_worker_steps_per_s_vs_local": 1.0, "sampling_2_workers_steps_per_s_vs_local": 1.7}
          for i, (b, rt) in enumerate([("local", 1.0), ("multiprocessing", 94.0)], 1)]
    plot_report({"frameworks": fw}, str(tmp_path / "fw.png"))
    plot_report({"backends": be}, str(tmp_path / "be.png"))
    png_ok(tmp_path / "fw.png")
    png_ok(tmp_path / "be.png")
    from unirl.errors import UnirlError

    with pytest.raises(UnirlError, match="no frameworks or backends"):
        plot_report({}, str(tmp_path / "x.png"))


def test_bench_plot_checks_its_output_before_measuring(tmp_path):
    res = run_cli("bench", "--backend=local", "--plot", str(tmp_path / "no" / "b.png"), timeout=120)
    assert res.returncode == 2 and "does not exist" in res.stderr and "measuring" not in res.stdout
