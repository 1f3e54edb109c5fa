"""`unirl train --replay-schedule RUN_DIR`: a recorded asynchronous run replayed from the command line, on another
backend, ends with the same weights; a checkpoint without a schedule (a synchronous algorithm's) is one line, exit 2."""
import json

import pytest

import unirl
from conftest import run_cli
from unirl import cli


def _last_digest(run_dir):
    lines = [json.loads(l) for l in open(run_dir / "result.json")]
    return lines[-1]["iteration"], lines[-1]["weights_digest"]


@pytest.mark.timeout(600)
def test_replayed_a3c_run_has_the_recorded_runs_weights(tmp_path):
    common = ["--run=A3C", "--config", json.dumps({"num_workers": 2}), "--stop", '{"training_iteration": 3}',
              "--evaluation-episodes", "0", "--quiet"]
    recorded, replayed = tmp_path / "recorded", tmp_path / "replayed"
    res = run_cli("train", *common, "--backend=multiprocessing", "--output", str(recorded), timeout=300)
    assert res.returncode == 0, res.stderr
    res = run_cli("train", *common, "--backend=local", "--replay-schedule", str(recorded), "--output", str(replayed),
                  timeout=300)
    assert res.returncode == 0, res.stderr
    assert _last_digest(replayed) == _last_digest(recorded)
    schedule = json.load(open(replayed / "params.json"))["config"]["arrival_schedule"]
    assert schedule and all(w in (0, 1) for w in schedule)


def test_replay_schedule_of_a_synchronous_run_is_one_line(tmp_path, capsys, tiny_ppo):
    algo = unirl.build("PPO", tiny_ppo)
    try:
        ck = algo.save(str(tmp_path / "ck"))
    finally:
        algo.stop()
    for run in ("A3C", "PPO"):
        out = tmp_path / f"run_{run}"
        assert cli.main(["train", f"--run={run}", "--replay-schedule", ck, "--output", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("unirl: error:") and "synchronous" in err[0], err
        assert not out.exists()


def test_replay_schedule_with_another_worker_count_is_one_line(tmp_path, capsys):
    algo = unirl.build("A3C", {"env": "CartPole-v1", "backend": "local", "num_workers": 2, "num_envs_per_worker": 2,
                               "rollout_fragment_length": 4, "train_batch_size": 16})
    try:
        algo.train()
        ck = algo.save(str(tmp_path / "ck"))
    finally:
        algo.stop()
    out = tmp_path / "run"
    assert cli.main(["train", "--run=A3C", "--replay-schedule", ck, "--config", '{"num_workers": 4}',
                     "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "recorded with 2 workers, this run has 4" in err[0], err
    assert not out.exists()


@pytest.mark.timeout(300)
def test_build_replays_a_multiprocessing_impala_run_on_local(tmp_path):
    """unirl.build(..., replay_schedule=CHECKPOINT): the local replay of a free-running multiprocessing IMPALA run
    ends with its weights, bit for bit; a synchronous algorithm, another algorithm or worker count is refused."""
    cfg = {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 2, "rollout_fragment_length": 8,
           "train_batch_size": 64}
    with unirl.build("IMPALA", dict(cfg, backend="multiprocessing")) as algo:
        for _ in range(4):
            algo.train()
        want = algo.weights_digest()
        ck = algo.save(str(tmp_path / "ck"))
    with unirl.build("IMPALA", dict(cfg, backend="local"), replay_schedule=ck) as replay:
        for _ in range(4):
            replay.train()
        assert replay.weights_digest() == want
    with pytest.raises(unirl.UnirlError, match="PPO is synchronous"):
        unirl.build("PPO", {"env": "CartPole-v1"}, replay_schedule=ck)
    with pytest.raises(unirl.UnirlError, match="is of IMPALA, not APPO"):
        unirl.build("APPO", cfg, replay_schedule=ck)
    with pytest.raises(unirl.UnirlError, match="recorded with 2 workers, this run has 4"):
        unirl.build("IMPALA", dict(cfg, num_workers=4), replay_schedule=ck)
