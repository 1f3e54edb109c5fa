"""MPI: worker ranks end themselves when the driver (rank 0) goes silent, by rank 0's heartbeat, which works across
hosts. Tested on one host with real mpiexec: rank 0 is SIGSTOPped mid-run, which is what a driver on a host that
vanished looks like from the other hosts (no process exit for Hydra or a pid watch to see; a SIGKILLed rank 0 on
the same host is already taken down by Hydra), so nothing but the missing heartbeat can tell the worker ranks."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import MPIEXEC, REPO, requires_mpi

pytestmark = pytest.mark.timeout(300)

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import unirl
    a = unirl.build("PPO", {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 2,
                            "train_batch_size": 64, "minibatch_size": 32, "num_epochs": 1, "backend": "mpi"})
    a.train()
    with open(sys.argv[1] + ".tmp", "w") as f:
        json.dump({"driver": os.getpid(), "workers": a.backend.worker_pids()}, f)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    while True:
        a.train()
''')


def alive(pid):
    from unirl.backends.base import pid_alive

    return pid_alive(pid)


@requires_mpi
def test_worker_ranks_end_when_the_driver_goes_silent(tmp_path):
    from unirl.backends.mpi import launch_command

    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    pids_file = tmp_path / "pids.json"
    env = dict(os.environ, UNIRL_MPI_HEARTBEAT_TIMEOUT="2", PYTHONPATH=REPO)
    for k in ("UNIRL_LAUNCHER_PID", "UNIRL_LAUNCHER_HOST", "UNIRL_STOP_FILE"):
        env.pop(k, None)
    cmd = launch_command(MPIEXEC, 3, [sys.executable, str(script), str(pids_file)])
    assert "-disable-auto-cleanup" in cmd  # else Hydra, not the heartbeat, would end the ranks
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not pids_file.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        pids = json.loads(pids_file.read_text())
        time.sleep(3)  # several heartbeats in: the ranks are listening
        assert all(alive(w) for w in pids["workers"])
        os.kill(pids["driver"], signal.SIGSTOP)
        t0 = time.monotonic()
        while any(alive(w) for w in pids["workers"]) and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        gone_after = time.monotonic() - t0
        assert not any(alive(w) for w in pids["workers"]), "worker ranks outlived the driver by 30 s"
        assert gone_after < 2 + 5  # the timeout, one beat and the check interval, with slack for a loaded machine
        os.kill(pids["driver"], signal.SIGKILL)
        _, err = p.communicate(timeout=30)
        assert "no heartbeat from the driver (rank 0)" in err
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
