"""`unirl train` end to end in a subprocess: the run directory, the per-iteration lines, `unirl evaluate`."""
import csv
import json
import os

import numpy as np

from conftest import run_cli


def test_train_writes_run_directory_and_evaluate_reads_it(tmp_path):
    out_dir = tmp_path / "run"
    config = json.dumps({"num_envs_per_worker": 4, "train_batch_size": 128, "minibatch_size": 64, "num_epochs": 2})
    res = run_cli("train", "--run=PPO", "--env=CartPole-v1", "--framework=torch", "--backend=local",
                  f"--config={config}", '--stop={"timesteps_total": 640}', "--seed", "3",
                  "--output", str(out_dir), "--checkpoint-freq", "2", "--evaluation-episodes", "3")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("iter ") == 5
    assert "evaluation: greedy mean return" in res.stdout
    params = json.load(open(out_dir / "params.json"))
    assert params["config"]["seed"] == 3 and params["config"]["num_envs_per_worker"] == 4
    lines = [json.loads(l) for l in open(out_dir / "result.json")]
    assert [r["iteration"] for r in lines] == [1, 2, 3, 4, 5]
    assert lines[-1]["timesteps_total"] == 640
    rows = list(csv.DictReader(open(out_dir / "progress.csv")))
    assert len(rows) == 5 and "episode_return_mean" in rows[0]
    cks = sorted(os.listdir(out_dir / "checkpoints"))
    assert cks == ["checkpoint_000002", "checkpoint_000004", "checkpoint_000005"]
    ev = json.load(open(out_dir / "evaluation.json"))
    assert ev["evaluation/episodes"] == 3
    # the fingerprint: each iteration's digest; the final one in evaluation.json is the last iteration's,
    # and it is the digest of the checkpoint's weights
    digests = [r["weights_digest"] for r in lines]
    assert len(set(digests)) == 5 and all(len(d) == 16 for d in digests)
    assert ev["weights_digest"] == digests[-1] and digests[-1] in res.stdout
    from unirl.kernels import weights_digest

    with np.load(out_dir / "checkpoints" / "checkpoint_000005" / "weights.npz") as z:
        names = [k for k in z.files if k.startswith("params/")]
        arrays = {k: z[k] for k in names}
    order = list(json.load(open(out_dir / "checkpoints" / "checkpoint_000005" / "state.json"))["param_names"])
    assert weights_digest(np.concatenate([arrays["params/" + n].ravel() for n in order])) == digests[-1]
    kernels = json.load(open(out_dir / "kernels.json"))
    assert "XLA_FLAGS" in kernels and all("value" in v for v in kernels.values())

    res = run_cli("evaluate", str(out_dir), "--episodes", "3", "--json", str(tmp_path / "ev.json"))
    assert res.returncode == 0, res.stderr
    ev2 = json.load(open(tmp_path / "ev.json"))
    # the same checkpoint, seed and episodes give the same returns as the evaluation at the end of training
    assert ev2["episode_returns"] == ev["evaluation/episode_returns"]
    assert f"mean return {np.mean(ev2['episode_returns']):.2f}" in res.stdout


def test_same_command_twice_gives_identical_weights(tmp_path):
    args = ["train", "--config", json.dumps({"num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32}),
            "--stop", '{"training_iteration": 4}', "--evaluation-episodes", "0", "--quiet"]
    for name in ("a", "b"):
        res = run_cli(*args, "--output", str(tmp_path / name))
        assert res.returncode == 0, res.stderr
    za = np.load(tmp_path / "a" / "checkpoints" / "checkpoint_000004" / "weights.npz")
    zb = np.load(tmp_path / "b" / "checkpoints" / "checkpoint_000004" / "weights.npz")
    assert za.files == zb.files
    for k in za.files:
        np.testing.assert_array_equal(za[k], zb[k], err_msg=k)
    ra = [json.loads(l) for l in open(tmp_path / "a" / "result.json")]
    rb = [json.loads(l) for l in open(tmp_path / "b" / "result.json")]
    for x, y in zip(ra, rb):
        assert {k: v for k, v in x.items() if "time" not in k and "per_s" not in k} == \
               {k: v for k, v in y.items() if "time" not in k and "per_s" not in k}


def test_progress_bar_follows_any_stop_criterion(tmp_path):
    """A stop on time, episodes or a return target drives the progress bar (it once crashed rich's
    formatting with a traceback when the criterion was neither timesteps_total nor training_iteration)."""
    for i, stop in enumerate(('{"time_total_s": 0.5}', '{"episodes_total": 20}', '{"episode_return_mean": 15}')):
        out = tmp_path / f"run{i}"
        proc = run_cli("train", "--run=PPO", "--env=CartPole-v1", "--stop", stop, "--evaluation-episodes", "0",
                       "--output", str(out), timeout=300, env=dict(os.environ, COLUMNS="120", FORCE_COLOR="1",
                                                                      TTY_COMPATIBLE="1", TTY_INTERACTIVE="1"))
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (stop, proc.stderr[-2000:])
        rows = [json.loads(line) for line in (out / "result.json").read_text().splitlines()]
        assert rows, stop


def test_run_folder_names_of_env_ids_with_slashes_or_colons_are_one_folder():
    from unirl.cli import _path_safe

    assert _path_safe("ALE/Pong-v5") == "ALE-Pong-v5"
    assert _path_safe("unirl/StatelessCartPole-v1") == "unirl-StatelessCartPole-v1"
    assert _path_safe("my_pkg.envs:make_env") == "my_pkg.envs-make_env"
    assert _path_safe("CartPole-v1") == "CartPole-v1"
