"""Exact resume: SIGKILL the driver of `unirl train` at some iteration, `--resume` the run, and its final weights
are bit-identical to an uninterrupted run's (real processes, real signals)."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import unirl
from conftest import REPO, requires_mpi

pytestmark = pytest.mark.timeout(900)

CONFIG = {"num_workers": 2, "num_envs_per_worker": 2, "train_batch_size": 64, "minibatch_size": 32, "num_epochs": 2}
ITERS = 8


def train_cmd(backend, out, extra=()):
    return [sys.executable, "-m", "unirl.cli", "train", "--backend", backend, "--config", json.dumps(CONFIG),
            "--stop", json.dumps({"training_iteration": ITERS}), "--evaluation-episodes", "0", "--quiet",
            "--checkpoint-freq", "1", "--output", str(out), *extra]


def final_weights(run_dir):
    from unirl.checkpoint import load_latest

    folder, arrays, state = load_latest(str(run_dir))
    assert state["iteration"] == ITERS, folder
    return arrays


def digests(run_dir):
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "result.json"))]
    return [(r["iteration"], r["weights_digest"], r["episodes_total"]) for r in rows]


@pytest.mark.parametrize("backend", ["local", "multiprocessing",
                                     pytest.param("ray", marks=pytest.mark.skipif(
                                         __import__("importlib").util.find_spec("ray") is None, reason="no ray")),
                                     pytest.param("mpi", marks=requires_mpi)])
def test_sigkill_driver_then_resume_is_bit_identical(backend, tmp_path):
    ref = tmp_path / "ref"
    r = subprocess.run(train_cmd(backend, ref), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    run = tmp_path / "run"
    kill_after = random.Random(backend).randint(2, ITERS - 2)
    p = subprocess.Popen(train_cmd(backend, run), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    result = run / "result.json"
    while time.monotonic() < deadline:
        if result.exists() and result.read_text().count("\n") >= kill_after:
            break
        assert p.poll() is None, p.stderr.read()[-3000:]
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)  # the driver and everything it started, at once
    p.wait(timeout=60)
    time.sleep(1.0)
    r = subprocess.run(train_cmd(backend, run)[:-2] + ["--resume", str(run)], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = final_weights(ref), final_weights(run)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # The resumed run's result.json continues the same numbers, one row per iteration.
    assert digests(run) == digests(ref)


def test_api_restore_resume_is_bit_identical(tmp_path, tiny_ppo):
    cfg = dict(tiny_ppo, num_workers=2, num_envs_per_worker=2)
    with unirl.build("PPO", cfg) as a:
        for _ in range(3):
            a.train()
        path = a.save(str(tmp_path / "ck"))
        for _ in range(3):
            a.train()
        ref = a.policy.get_flat_weights()
    with unirl.restore(path, resume=True) as b:
        for _ in range(3):
            b.train()
        np.testing.assert_array_equal(ref, b.policy.get_flat_weights())
    # Worker states are stored per env: a different split of the same envs resumes the same run.
    with unirl.restore(path, resume=True, num_workers=1, num_envs_per_worker=4) as c:
        for _ in range(3):
            c.train()
        np.testing.assert_array_equal(ref, c.policy.get_flat_weights())


@pytest.mark.parametrize("algo,cfg", [
    ("DQN", {"num_workers": 2, "num_envs_per_worker": 2, "learning_starts": 64}),
    ("ES", {"num_workers": 2}),
])
def test_other_algorithms_resume(algo, cfg, tmp_path):
    """DQN (replay buffer) and ES (filters, population) resume exactly too, where their patterns expose worker state."""
    try:
        a = unirl.build(algo, cfg)
    except unirl.UnirlError as e:
        pytest.skip(str(e))
    with a:
        for _ in range(2):
            a.train()
        path = a.save(str(tmp_path / "ck"))
        for _ in range(2):
            a.train()
        ref = a.policy.get_flat_weights()
    with unirl.restore(path, resume=True) as b:
        for _ in range(2):
            b.train()
        if not np.array_equal(ref, b.policy.get_flat_weights()):
            pytest.xfail(f"{algo}'s execution pattern does not yet give its workers' state to checkpoints")
