"""Shared fixtures: small, fast configs, a helper to run the CLI in a subprocess, the MPI skip marker."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A PPO config small enough for a unit test: 4 envs x 16 steps, 2 epochs of 2 minibatches.
TINY_PPO = {"env": "CartPole-v1", "num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32,
            "num_epochs": 2}


@pytest.fixture
def tiny_ppo():
    return dict(TINY_PPO)


MPI4PY_MISSING = (None if importlib.util.find_spec("mpi4py") is not None
                  else "mpi4py is not installed (pip install 'unirl[mpi]')")


def _mpi_missing() -> tuple[str | None, str | None]:
    """(mpiexec, None) when the MPI tests can run here, else (None, why not)."""
    if MPI4PY_MISSING:
        return None, MPI4PY_MISSING
    from unirl.backends.mpi import find_mpiexec
    from unirl.errors import UnirlError

    try:
        return find_mpiexec(), None
    except UnirlError as e:
        return None, str(e)


MPIEXEC, MPI_MISSING = _mpi_missing()
#: Marks a test that needs mpi4py and mpiexec: skipped with the reason when either is missing.
requires_mpi = pytest.mark.skipif(MPI_MISSING is not None, reason=f"MPI tests: {MPI_MISSING}")
#: Marks a test of the MPI backend outside a job (no mpiexec needed): skipped when mpi4py is missing.
requires_mpi4py = pytest.mark.skipif(MPI4PY_MISSING is not None, reason=f"MPI tests: {MPI4PY_MISSING}")


def run_cli(*args, timeout=300, env=None):
    """Run `python -m unirl.cli ARGS` and return the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "unirl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance per test module (Ray takes seconds to start)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()



_MPI_RUNS_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from {module} import {function}
out = {{}}
for n in {counts!r}:
    w, results = {function}("mpi", n)
    np.save(f"{{sys.argv[1]}}/weights_{{n}}.npy", w)
    out[n] = results
with open(f"{{sys.argv[1]}}/results.json", "w") as f:
    json.dump(out, f)
"""


def mpi_runs_in_one_job(folder, module: str, function: str, worker_counts, timeout: int = 400) -> dict:
    """{n: (weights, results)} of `module.function("mpi", n)` for each worker count, all in one
    `mpiexec -n max+1` job (each backend instance places its workers on ranks 1..n)."""
    import json

    import numpy as np

    script = _MPI_RUNS_SCRIPT.format(tests=os.path.join(REPO, "tests"), module=module, function=function,
                                     counts=list(worker_counts))
    out = subprocess.run([MPIEXEC, "-n", str(max(worker_counts) + 1), sys.executable, "-c", script, str(folder)],
                         capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    results = json.loads((folder / "results.json").read_text())
    return {n: (np.load(folder / f"weights_{n}.npy"), results[str(n)]) for n in worker_counts}


#: Result fields that measure time: left out when two runs' metrics are compared bit for bit.
TIME_FIELDS = ("time_this_iter_s", "time_total_s", "env_steps_per_s")


def assert_same_run(reference, got, label):
    """Two runs' (final flat weights, per-iteration metrics) are the same: the weights bit for bit (the first
    differing index named), the metrics as JSON."""
    import json

    import numpy as np
    import pytest

    (w0, r0), (w1, r1) = reference, got
    assert w0.shape == w1.shape, f"{label}: weights of shapes {w0.shape} and {w1.shape}"
    if not np.array_equal(w0.view(np.uint32), w1.view(np.uint32)):
        i = int(np.flatnonzero(w0.view(np.uint32) != w1.view(np.uint32))[0])
        pytest.fail(f"{label}: final weights differ first at index {i}: {w0[i]!r} vs {w1[i]!r}")
    assert json.dumps(r0) == json.dumps(r1), f"{label}: per-iteration metrics differ"
