"""Every backend meets the Backend protocol: the reusable checks of unirl.conformance.backend_checks, per backend.

Checks: ordering, wait-first-k (with timeout, consumed as they arrive), exception with the
worker's traceback and id, killed worker detected, a 100 MB array bit-exact both ways, worker
logs tagged in the driver's log, clean shutdown. Ray shares one instance per module; MPI runs
the checks once inside an `mpiexec -n 4` job and reports them as JSON lines.
"""
import json
import subprocess
import sys

import pytest

from unirl.conformance import backend_checks as bc
from unirl.errors import UnirlError
from conftest import MPIEXEC, REPO, requires_mpi, requires_mpi4py

CHECKS = {c.__name__: c for c in bc.ALL_CHECKS}
PYTHON = sys.executable


def _assert_ok(result):
    assert result.ok, f"{result}\n{json.dumps(result.data, indent=1, default=str)[:3000]}"


@pytest.mark.parametrize("check", list(CHECKS))
def test_local(check):
    _assert_ok(CHECKS[check](bc.backend_factory("local")))


@pytest.mark.parametrize("check", list(CHECKS))
def test_multiprocessing(check):
    _assert_ok(CHECKS[check](bc.backend_factory("multiprocessing")))


def test_multiprocessing_sigkill_detected():
    _assert_ok(bc.check_killed_worker(bc.backend_factory("multiprocessing"), how="kill", timeout=30))


@pytest.mark.parametrize("check", list(CHECKS))
def test_ray(ray_session, check):
    _assert_ok(CHECKS[check](bc.backend_factory("ray")))


MPI_CHECKS = """
import json
from unirl.conformance import backend_checks as bc
f = bc.backend_factory("mpi")
# The killed-worker check ends one rank: it runs last.
for check in [c for c in bc.ALL_CHECKS if c is not bc.check_killed_worker] + [bc.check_killed_worker]:
    print("RESULT " + json.dumps(check(f).to_dict(), default=str), flush=True)
"""


@pytest.fixture(scope="module")
def mpi_results():
    out = subprocess.run([MPIEXEC, "-disable-auto-cleanup", "-n", "4", sys.executable, "-c", MPI_CHECKS],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    results = {}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            d = json.loads(line[len("RESULT "):])
            results[d["check"]] = bc.CheckResult(**d)
    assert results, f"no results from the MPI job:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return results


@requires_mpi
@pytest.mark.parametrize("check", list(CHECKS))
def test_mpi(mpi_results, check):
    name = check.removeprefix("check_")
    assert name in mpi_results, f"the MPI job did not report {name}: {list(mpi_results)}"
    _assert_ok(mpi_results[name])


@requires_mpi4py
def test_mpi_outside_a_job_says_how_to_launch():
    import unirl

    with pytest.raises(UnirlError, match=r"mpiexec -n <num_workers \+ 1> python script.py"):
        unirl.build("PPO", {"backend": "mpi"})


@requires_mpi4py
def test_mpi_missing_mpiexec_is_one_clear_sentence(monkeypatch, tmp_path):
    from unirl.backends import mpi

    monkeypatch.setattr(mpi.shutil, "which", lambda name: None)
    monkeypatch.setattr(mpi.sys, "executable", "/nonexistent/bin/python")
    with pytest.raises(UnirlError, match=r"^the MPI backend needs `mpiexec`, which was not found on PATH;"):
        mpi.find_mpiexec()
    code = ("import os, sys; os.environ['PATH'] = '/nonexistent'; sys.executable = '/nonexistent/python'\n"
            "from unirl.cli import main; sys.exit(main(['train', '--backend', 'mpi', '--quiet', '--output', sys.argv[1]]))")
    monkeypatch.undo()
    out = subprocess.run([PYTHON, "-c", code, str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith("unirl: error: the MPI backend needs `mpiexec`"), out.stderr
    assert "Traceback" not in out.stderr


TINY = '{"num_workers": 2, "num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32, "num_epochs": 1}'


# `unirl train --backend=mpi` launching mpiexec itself: tests/test_backend_processes.py (normal end).


@requires_mpi
def test_mpi_cli_inside_users_mpiexec_uses_given_ranks(tmp_path):
    out = subprocess.run([MPIEXEC, "-n", "3", sys.executable, "-m", "unirl.cli", "train", "--backend", "mpi",
                          "--config", TINY, "--stop", '{"training_iteration": 2}', "--evaluation-episodes", "0",
                          "--quiet", "--output", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "starting" not in out.stdout  # no second mpiexec inside the job
    assert len((tmp_path / "run" / "result.json").read_text().splitlines()) == 2
