"""Ray Tune: the unirl trainable (save/restore through unirl checkpoints), PBT exploiting and
exploring the learning rate with checkpoints carried between trials, Optuna search, the CLI."""
import glob
import json
import os

import pytest

from conftest import run_cli

pytest.importorskip("ray.tune")

SMALL = {"num_envs_per_worker": 4, "train_batch_size": 128, "minibatch_size": 64, "num_epochs": 2,
         "lr_decay_timesteps": 0}


def test_trainable_saves_and_restores_unirl_checkpoints(tmp_path, monkeypatch):
    import unirl.tune

    # a Trainable made outside Tune keeps its log folder under ~/ray_results: here, under tmp_path
    monkeypatch.setattr("ray.tune.trainable.trainable.DEFAULT_STORAGE_PATH", str(tmp_path / "logs"))
    cls = unirl.tune.trainable("PPO")
    a = cls(config=dict(SMALL, lr=0.003))
    b = cls(config=dict(SMALL, lr=0.0005))
    try:
        for _ in range(2):
            ra = a.train()
        assert ra["lr"] == pytest.approx(0.003) and "episode_returns_this_iter" not in ra
        folder = str(tmp_path / "ck")
        os.makedirs(folder)
        a.save_checkpoint(folder)
        assert os.path.exists(os.path.join(folder, "unirl", "weights.npz"))
        assert json.load(open(os.path.join(folder, "trial.json")))["iteration"] == 2
        b.load_checkpoint(folder)
        assert b.algo.iteration == 2 and b.algo.weights_digest() == ra["weights_digest"]
        rb = b.train()
        # b goes on from a's state with its own learning rate
        assert rb["iteration"] == 3 and rb["lr"] == pytest.approx(0.0005)
        assert rb["timesteps_total"] == ra["timesteps_total"] + 128
        # b's continuation equals a's own next iteration only where the learning rates agree
        assert rb["weights_digest"] != a.train()["weights_digest"]
    finally:
        a.stop()
        b.stop()


def test_space_and_config_errors_come_before_ray_starts():
    from unirl.errors import UnirlError
    from unirl.tune import check_config, run_tune, space_from_json

    space = space_from_json({"lr": {"loguniform": [1e-4, 1e-2]}, "num_epochs": {"choice": [2, 4]}, "gamma": 0.9})
    assert space["gamma"] == 0.9 and 1e-4 <= space["lr"].sample() <= 1e-2
    for bad, msg in [({"lr": {"loguniform": [0, 1]}}, "low > 0"), ({"lr": {"uniform": [1]}}, "takes \\[low, high\\]"),
                     ({"lr": {"logunifrom": [1e-4, 1e-2]}}, "unknown form `logunifrom`"),
                     ({"num_epochs": {"choice": []}}, "non-empty list")]:
        with pytest.raises(UnirlError, match=msg):
            space_from_json(bad)
    with pytest.raises(UnirlError, match="unknown config key `lrr`"):
        check_config("PPO", {"lrr": space["lr"]})
    with pytest.raises(UnirlError, match="needs at least one searchable key"):
        run_tune("PPO", dict(SMALL), scheduler="pbt")


@pytest.mark.timeout(400)
def test_pbt_exploits_and_explores_the_learning_rate(tmp_path):
    """4 trials; every 2 iterations the bottom quarter takes a top-quarter trial's checkpoint and its lr x 0.8 / 1.2."""
    summary = tmp_path / "pbt.json"
    res = run_cli("tune", "--scheduler", "pbt", "--num-samples", "4", "--config", json.dumps(SMALL),
                  "--space", '{"lr": {"loguniform": [1e-4, 1e-2]}}', "--stop", '{"training_iteration": 8}',
                  "--perturbation-interval", "2", "--cpus-per-trial", "0.5", "--num-cpus", "2",
                  "--output", str(tmp_path), "--name", "pbt", "--json", str(summary), timeout=380)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.load(open(summary))
    trials = report["trials"]
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" and t["training_iteration"] == 8 for t in trials)
    assert "PBT:" in res.stdout and "| trial |" in res.stdout
    # exploitation: a trial continued from another trial's unirl checkpoint ...
    exploits = report["exploitations"]
    assert exploits, "PBT never exploited"
    restored = []
    for path in glob.glob(str(tmp_path / "pbt" / "*" / "result.json")):
        for line in open(path):
            r = json.loads(line)
            if r.get("restored_from"):
                restored.append((r["trial_id"], r["restored_from"], r["training_iteration"]))
    assert restored and all(me != source for me, source, _ in restored)
    # ... with an explored learning rate: the clone's lr perturbed (x0.8 / x1.2) or resampled
    for e in exploits:
        old, new = e["clone_config"]["lr"], e["new_config"]["lr"]
        assert new != old and 1e-4 * 0.8 <= new <= 1e-2 * 1.2
    # the lr the trials trained with follows their config
    for path in glob.glob(str(tmp_path / "pbt" / "*" / "result.json")):
        rows = [json.loads(l) for l in open(path)]
        assert all(r["lr"] == pytest.approx(r["config"]["lr"]) for r in rows if "config" in r)
    assert glob.glob(str(tmp_path / "pbt" / "*" / "checkpoint_*" / "unirl" / "weights.npz"))


@pytest.mark.timeout(300)
def test_optuna_search_runs_the_same_trainable(tmp_path):
    pytest.importorskip("optuna")
    summary = tmp_path / "optuna.json"
    res = run_cli("tune", "--search", "optuna", "--num-samples", "3", "--config", json.dumps(SMALL),
                  "--space", '{"lr": {"loguniform": [1e-4, 1e-2]}}', "--stop", '{"training_iteration": 2}',
                  "--cpus-per-trial", "0.5", "--num-cpus", "2", "--output", str(tmp_path), "--name", "opt",
                  "--json", str(summary), timeout=280)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = json.load(open(summary))["trials"]
    assert len(trials) == 3 and all(t["training_iteration"] == 2 for t in trials)
    assert len({t["lr"] for t in trials}) == 3
    assert all(t["episode_return_mean"] > 0 for t in trials)


@pytest.mark.timeout(300)
def test_trials_on_the_multiprocessing_backend(tmp_path):
    summary = tmp_path / "mp.json"
    config = dict(SMALL, backend="multiprocessing", num_workers=2, num_envs_per_worker=2)
    res = run_cli("tune", "--num-samples", "2", "--config", json.dumps(config),
                  "--space", '{"lr": {"grid_search": [0.001, 0.003]}}', "--stop", '{"training_iteration": 2}',
                  "--cpus-per-trial", "1", "--num-cpus", "2", "--output", str(tmp_path), "--name", "mp",
                  "--json", str(summary), timeout=280)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = json.load(open(summary))["trials"]
    # grid_search x num_samples: 4 trials, each with two worker processes
    assert len(trials) == 4 and sorted(t["lr"] for t in trials) == [0.001, 0.001, 0.003, 0.003]
    assert all(t["status"] == "TERMINATED" and t["timesteps_total"] == 256 for t in trials)
    rows = [json.loads(l) for p in glob.glob(str(tmp_path / "mp" / "*" / "result.json")) for l in open(p)]
    # the same config gives the same bits in every trial, whichever process ran it
    by_lr = {}
    for r in rows:
        if r["training_iteration"] == 2:
            by_lr.setdefault(r["config"]["lr"], set()).add(r["weights_digest"])
    assert {k: len(v) for k, v in by_lr.items()} == {0.001: 1, 0.003: 1}


@pytest.mark.parametrize("args, message", [
    (["--space", '{"lr": 1', ], "--space is not valid JSON"),
    (["--stop", "{}"], "--stop is empty"),
    (["--config", '{"lr": 0.1}', "--space", '{"lr": {"uniform": [0.1, 0.2]}}'], "both set lr"),
    (["--scheduler", "pbt"], "needs at least one searchable key"),
    (["--space", '{"lrr": {"uniform": [0.1, 0.2]}}'], "unknown config key `lrr`"),
])
def test_tune_usage_errors_are_one_line(args, message):
    res = run_cli("tune", *args, timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
