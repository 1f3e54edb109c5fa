"""TensorBoard event files in the run directory, and params.json's fully resolved config."""
import glob
import json
import os
import struct
import subprocess
import sys

import pytest

from conftest import REPO, run_cli


def read_scalars(logdir: str) -> dict:
    """{tag: [(step, value), ...]} from every event file in logdir, read as TFRecords (no TensorBoard needed)."""
    from tensorboardX.proto import event_pb2

    out: dict = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        data = open(path, "rb").read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            record = data[pos + 12:pos + 12 + length]
            pos += 12 + length + 4
            event = event_pb2.Event.FromString(record)
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_run_logger_writes_one_scalar_per_numeric_key_at_timesteps_total(tmp_path):
    from unirl.results import RunLogger

    logger = RunLogger(str(tmp_path), {"run": "PPO", "config": {"model": {}}, "stop": {}})
    results = [{"iteration": i, "timesteps_total": 256 * i, "episode_return_mean": 10.0 * i + 0.5,
                "learner/total_loss": 1.0 / i, "episode_returns_this_iter": [1.0, 2.0], "weights_digest": "ab",
                "flag": True} for i in (1, 2, 3)]
    for r in results:
        logger.log(r)
    logger.close()
    scalars = read_scalars(str(tmp_path))
    # numeric keys only: no list, no string, no bool
    assert set(scalars) == {"iteration", "timesteps_total", "episode_return_mean", "learner/total_loss"}
    assert scalars["episode_return_mean"] == [(256, 10.5), (512, 20.5), (768, 30.5)]
    assert [s for s, _ in scalars["learner/total_loss"]] == [256, 512, 768]
    assert scalars["learner/total_loss"][2][1] == pytest.approx(1 / 3)


def test_params_json_holds_the_full_model_config(tmp_path):
    from unirl.models import ModelConfig
    from unirl.results import RunLogger
    import dataclasses

    RunLogger(str(tmp_path), {"run": "PPO", "config": {"model": {"hidden_sizes": [32]}, "normalize_observations": True,
                                                       "normalize_clip": 5.0}}).close()
    model = json.load(open(tmp_path / "params.json"))["config"]["model"]
    assert set(model) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert model["hidden_sizes"] == [32] and model["activation"] == "tanh"
    assert model["normalize_observations"] is True and model["normalize_clip"] == 5.0


def test_tensorboard_writer_does_not_import_torch(tmp_path):
    code = ("import sys\nfrom unirl.results import RunLogger\n"
            f"l = RunLogger({str(tmp_path)!r}, {{}})\nl.log({{'iteration': 1, 'timesteps_total': 8, 'x': 1.0}})\n"
            "l.close()\nprint('torch' in sys.modules)\nimport torch\nprint(torch.zeros(1).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == "False"  # and torch still imports afterwards
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))


def test_unirl_train_writes_events_tensorboard_can_read(tmp_path):
    out_dir = tmp_path / "run"
    config = json.dumps({"num_envs_per_worker": 4, "train_batch_size": 128, "minibatch_size": 64, "num_epochs": 2})
    res = run_cli("train", f"--config={config}", '--stop={"timesteps_total": 512}', "--output", str(out_dir),
                  "--quiet", "--evaluation-episodes", "0", timeout=300)
    assert res.returncode == 0, res.stderr
    results = [json.loads(l) for l in open(out_dir / "result.json")]
    scalars = read_scalars(str(out_dir))
    assert [s for s, _ in scalars["episode_return_mean"]] == [128, 256, 384, 512]
    assert [v for _, v in scalars["learner/total_loss"]] == pytest.approx([r["learner/total_loss"] for r in results])
    params = json.load(open(out_dir / "params.json"))
    assert params["config"]["model"]["hidden_sizes"] == [64, 64] and "activation" in params["config"]["model"]
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    acc = EventAccumulator(str(out_dir))
    acc.Reload()
    assert "episode_return_mean" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("episode_return_mean")] == [128, 256, 384, 512]


def test_resumed_run_purges_redone_steps_in_tensorboard(tmp_path):
    """A resumed run redoes the iterations after its checkpoint: TensorBoard shows each step once."""
    pytest.importorskip("tensorboard")
    import time

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from unirl.results import RunLogger

    first = RunLogger(str(tmp_path), {})
    for i in (1, 2, 3):
        first.log({"iteration": i, "timesteps_total": 100 * i, "episode_return_mean": float(i)})
    first.close()
    time.sleep(1.1)  # event files are named by the second they were opened
    resumed = RunLogger(str(tmp_path), {})  # resumed from the iteration-1 checkpoint
    for i in (2, 3, 4):
        resumed.log({"iteration": i, "timesteps_total": 100 * i, "episode_return_mean": 10.0 * i})
    resumed.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("episode_return_mean")] == [(100, 1.0), (200, 20.0), (300, 30.0),
                                                                              (400, 40.0)]
