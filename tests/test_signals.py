"""Signals: Ctrl-C / SIGTERM finish the iteration, checkpoint and exit 130/143 with one line; a second Ctrl-C exits at
once; under MPI the launcher's death takes the job down and the relaunch works from any directory."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO, requires_mpi

psutil = pytest.importorskip("psutil")
pytestmark = pytest.mark.timeout(600)

CONFIG = json.dumps({"num_workers": 2, "num_envs_per_worker": 2, "train_batch_size": 64, "minibatch_size": 32,
                     "num_epochs": 1})


def start(backend, out, marker, cwd=REPO, stop='{"timesteps_total": 1000000000}', extra=(), launcher=None):
    env = dict(os.environ, UNIRL_TEST_MARKER=marker)
    launcher = launcher or [sys.executable, "-m", "unirl.cli"]
    return subprocess.Popen([*launcher, "train", "--backend", backend, "--config", CONFIG,
                             "--stop", stop, "--evaluation-episodes", "0", "--quiet", "--output", str(out), *extra],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def marked(marker):
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("UNIRL_TEST_MARKER") == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def wait_rows(proc, out, n=2, timeout=180):
    deadline = time.monotonic() + timeout
    f = out / "result.json"
    while time.monotonic() < deadline:
        if f.exists() and f.read_text().count("\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early ({proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail("training did not start")


def cleanup(marker):
    for p in marked(marker):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.mark.parametrize("backend,sig,code", [("multiprocessing", signal.SIGTERM, 143),
                                              ("multiprocessing", signal.SIGINT, 130),
                                              ("local", signal.SIGTERM, 143),
                                              pytest.param("ray", signal.SIGTERM, 143, marks=pytest.mark.skipif(
                                                  __import__("importlib").util.find_spec("ray") is None, reason="no ray")),
                                              pytest.param("mpi", signal.SIGTERM, 143, marks=requires_mpi),
                                              pytest.param("mpi", signal.SIGINT, 130, marks=requires_mpi)])
def test_signal_checkpoints_and_exits(backend, sig, code, tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "run"
    p = start(backend, out, marker)
    try:
        wait_rows(p, out)
        p.send_signal(sig)
        stdout, stderr = p.communicate(timeout=120)
        assert p.returncode == code, stderr[-3000:]
        assert "Traceback" not in stderr, stderr[-3000:]
        lines = [l for l in stderr.splitlines() if l.startswith("unirl: stopped by")]
        assert len(lines) == 1 and f"--resume {out}" in lines[0], stderr[-3000:]
        from unirl.checkpoint import load_latest

        rows = (out / "result.json").read_text().count("\n")
        _, _, state = load_latest(str(out))
        assert state["iteration"] == rows  # the checkpoint holds the last finished iteration
        time.sleep(3)
        assert not marked(marker), "processes left behind"
    finally:
        cleanup(marker)


def test_second_ctrl_c_exits_at_once(tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "run"
    # Big iterations, so the first Ctrl-C is still waiting for its iteration when the second comes.
    config = json.dumps({"num_workers": 2, "num_envs_per_worker": 2, "train_batch_size": 40000,
                         "minibatch_size": 40000, "num_epochs": 1})
    env = dict(os.environ, UNIRL_TEST_MARKER=marker)
    p = subprocess.Popen([sys.executable, "-m", "unirl.cli", "train", "--backend", "multiprocessing", "--config",
                          config, "--stop", '{"training_iteration": 1000}', "--evaluation-episodes", "0", "--quiet",
                          "--output", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_rows(p, out, n=1, timeout=300)
        p.send_signal(signal.SIGINT)
        time.sleep(0.3)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=60)
        assert p.returncode == 130, stderr[-3000:]
        assert time.monotonic() - t0 < 15
        assert "interrupted again" in stderr and "Traceback" not in stderr, stderr[-3000:]
    finally:
        cleanup(marker)


@requires_mpi
def test_mpi_launcher_sigkill_takes_the_job_down(tmp_path):
    marker = uuid.uuid4().hex
    out = tmp_path / "run"
    p = start("mpi", out, marker)
    try:
        wait_rows(p, out)
        before = set(os.listdir("/dev/shm"))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        time.sleep(5)
        left = marked(marker)
        assert not left, f"alive 5 s after the launcher's SIGKILL: {[q.cmdline() for q in left]}"
    finally:
        cleanup(marker)


@requires_mpi
def test_mpi_relaunch_works_from_a_directory_holding_a_unirl_folder(tmp_path):
    (tmp_path / "unirl").mkdir()  # would shadow the package for `python -m unirl.cli`
    marker = uuid.uuid4().hex
    shm_before = {f for f in os.listdir("/dev/shm") if f.startswith("mpich")}
    # The installed `unirl` command (its sys.path starts at its own folder, not the cwd).
    unirl_cmd = os.path.join(os.path.dirname(sys.executable), "unirl")
    p = start("mpi", tmp_path / "run", marker, cwd=str(tmp_path), stop='{"training_iteration": 2}',
              launcher=[unirl_cmd])
    try:
        _, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        assert (tmp_path / "run" / "result.json").read_text().count("\n") == 2
        new_shm = {f for f in os.listdir("/dev/shm") if f.startswith("mpich")} - shm_before
        assert not new_shm, f"left in /dev/shm: {new_shm}"
    finally:
        cleanup(marker)
