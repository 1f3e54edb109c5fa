"""No process is left behind by `unirl train` on the process backends: after a normal end, after Ctrl-C, after a worker crash.

Each run gets a unique marker in its environment; every process it starts (workers, Ray's
daemons, mpiexec and its ranks) inherits it, so psutil finds them all afterwards.
"""
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import REPO, requires_mpi

psutil = pytest.importorskip("psutil")

TINY = ('{"num_workers": 2, "num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32, '
        '"num_epochs": 1}')
BACKENDS = ["multiprocessing", "ray", pytest.param("mpi", marks=requires_mpi)]


def marked(marker: str) -> list:
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.environ().get("UNIRL_TEST_MARKER") == marker and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def start_train(backend: str, tmp_path, stop: str, config: str = TINY):
    if backend == "ray":
        pytest.importorskip("ray")
    marker = uuid.uuid4().hex
    env = dict(os.environ, UNIRL_TEST_MARKER=marker)
    proc = subprocess.Popen([sys.executable, "-m", "unirl.cli", "train", "--backend", backend, "--config", config,
                             "--stop", stop, "--evaluation-episodes", "0", "--quiet", "--output", str(tmp_path / "run")],
                            env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker


def wait_for_training(proc, tmp_path, timeout=120):
    result = tmp_path / "run" / "result.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result.exists() and result.read_text().count("\n") >= 1:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended early (exit {proc.returncode}): {proc.stderr.read()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail("training did not start in time")


def assert_nothing_left(proc, marker, timeout=30):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for p in marked(marker):
            p.kill()
        proc.kill()
        pytest.fail("the driver did not end")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and marked(marker):
        time.sleep(0.2)
    left = marked(marker)
    for p in left:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"processes left behind: {[(p.pid, p.info['cmdline']) for p in left]}"
    return proc.returncode, out, err


def is_worker(p, backend, driver_pid) -> bool:
    cmd = " ".join(p.info["cmdline"] or [])
    if backend == "multiprocessing":
        # Workers are forked by the template process (the driver's child), so they carry its command line.
        return "from unirl.backends.multiprocessing import" in cmd and p.ppid() != driver_pid
    if backend == "ray":
        return cmd.startswith("ray::") and ("_Host" in cmd or "unirl-worker" in cmd)
    try:
        return "unirl.cli" in cmd and p.environ().get("PMI_RANK") not in (None, "0")
    except psutil.Error:
        return False


@pytest.mark.parametrize("backend", BACKENDS)
def test_normal_end_leaves_nothing(backend, tmp_path):
    proc, marker = start_train(backend, tmp_path, '{"training_iteration": 2}')
    code, out, err = assert_nothing_left(proc, marker, timeout=180)
    assert code == 0, err[-3000:]
    assert (tmp_path / "run" / "result.json").read_text().count("\n") == 2
    if backend == "mpi":
        assert "unirl: starting 3 MPI ranks (rank 0 drives, 2 host workers)" in out


@pytest.mark.parametrize("backend", BACKENDS)
def test_ctrl_c_leaves_nothing(backend, tmp_path):
    proc, marker = start_train(backend, tmp_path, '{"timesteps_total": 1000000000}')
    wait_for_training(proc, tmp_path)
    proc.send_signal(signal.SIGINT)
    code, out, err = assert_nothing_left(proc, marker, timeout=60)
    assert code != 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_worker_crash_is_reported_and_leaves_nothing(backend, tmp_path):
    # Recovery off: the crash ends the run (tests/test_worker_recovery.py covers replacing the worker).
    no_recovery = TINY[:-1] + ', "recreate_failed_workers": false}'
    proc, marker = start_train(backend, tmp_path, '{"timesteps_total": 1000000000}', no_recovery)
    wait_for_training(proc, tmp_path)
    workers = [p for p in marked(marker) if is_worker(p, backend, proc.pid)]
    assert workers, f"no worker process found among {[p.info['cmdline'] for p in marked(marker)]}"
    workers[0].kill()
    code, out, err = assert_nothing_left(proc, marker, timeout=60)
    assert code != 0
    if backend == "mpi":
        # Hydra ends the whole job when a rank is killed by a signal, and says which.
        assert "signal 9" in (out + err) or "Killed" in (out + err), err[-3000:]
    else:
        assert "worker" in err and "died" in err and "Traceback (most recent call last)" not in err, err[-3000:]
