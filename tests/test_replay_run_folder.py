"""`unirl train --replay-schedule RUN_DIR`, with nothing else: the recorded run's algorithm, config and length, replayed
on the local backend, end with the recorded run's weights, bit for bit (a free-running multiprocessing IMPALA run);
another algorithm, another worker count or more iterations than were recorded are refused in one sentence."""
import json

import pytest

from unirl import cli

IMPALA_CONFIG = {"num_workers": 2, "num_envs_per_worker": 2, "rollout_fragment_length": 8, "train_batch_size": 64}


def _results(run_dir):
    return [json.loads(line) for line in open(run_dir / "result.json")]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A free-running IMPALA run on the multiprocessing backend, 5 iterations."""
    run_dir = tmp_path_factory.mktemp("impala") / "recorded"
    assert cli.main(["train", "--run=IMPALA", "--backend=multiprocessing", "--config", json.dumps(IMPALA_CONFIG),
                     "--stop", '{"training_iteration": 5}', "--evaluation-episodes", "3", "--output", str(run_dir),
                     "--quiet"]) == 0
    return run_dir


@pytest.mark.timeout(300)
def test_replaying_a_run_folder_on_local_gives_its_weights(recorded, tmp_path):
    replayed = tmp_path / "replayed"
    assert cli.main(["train", "--replay-schedule", str(recorded), "--output", str(replayed), "--quiet"]) == 0
    want, got = _results(recorded), _results(replayed)
    assert len(got) == len(want) == 5
    assert [r["weights_digest"] for r in got] == [r["weights_digest"] for r in want]
    params = json.load(open(replayed / "params.json"))
    assert params["run"] == "IMPALA" and params["stop"] == {"training_iteration": 5}
    assert params["config"]["backend"] == "local" and params["config"]["num_workers"] == 2
    schedule = params["config"]["arrival_schedule"]
    assert set(schedule) == {0, 1}  # both workers' results, interleaved as they arrived
    assert json.load(open(replayed / "evaluation.json")) == json.load(open(recorded / "evaluation.json"))


@pytest.mark.parametrize("flags, message", [
    (["--run=APPO"], "is of IMPALA, not APPO; replay a schedule with the algorithm that recorded it."),
    (["--config", '{"num_workers": 4}'], "was recorded with 2 workers, this run has 4; a schedule names workers, "
                                         "so replay it with num_workers=2."),
    (["--stop", '{"training_iteration": 6}'], "the recorded run ends at iteration 5, --stop asks for 6; a replay can "
                                              "repeat at most the iterations its schedule recorded."),
    (["--resume", "{recorded}"], "--replay-schedule starts a new run and cannot be combined with --resume"),
])
def test_a_replay_that_cannot_repeat_the_run_is_one_sentence(recorded, tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    flags = [f.replace("{recorded}", str(recorded)) for f in flags]
    assert cli.main(["train", "--replay-schedule", str(recorded), "--output", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("unirl: error: ") and message in err[0], err
    assert not out.exists()
