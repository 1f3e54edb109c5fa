"""PPO with torch gives bit-identical final weights and identical per-iteration metrics on every backend and worker count.

The same run (seed, 16 envs in total, 8 steps each, 3 iterations) on local, multiprocessing,
ray and mpi with num_workers 1, 2 and 4 is compared with local/1 worker: the final flat
weights byte for byte, and every per-iteration metric except the time fields.
"""
import json

import numpy as np
import pytest

from conftest import mpi_runs_in_one_job, requires_mpi

TOTAL_ENVS = 16
WORKER_COUNTS = (1, 2, 4)
TIME_FIELDS = ("time_this_iter_s", "time_total_s", "env_steps_per_s")


def ppo_config(backend: str, num_workers: int) -> dict:
    return {"env": "CartPole-v1", "framework": "torch", "backend": backend, "seed": 7,
            "num_workers": num_workers, "num_envs_per_worker": TOTAL_ENVS // num_workers,
            "train_batch_size": TOTAL_ENVS * 8, "minibatch_size": 64, "num_epochs": 2}


def run_ppo(backend: str, num_workers: int, iterations: int = 3):
    """(final flat weights, per-iteration results without time fields) of a short PPO run."""
    import unirl

    algo = unirl.build("PPO", ppo_config(backend, num_workers))
    try:
        results = []
        for _ in range(iterations):
            r = algo.train()
            results.append({k: v for k, v in r.items() if k not in TIME_FIELDS})
        return algo.policy.get_flat_weights(), results
    finally:
        algo.stop()


def first_difference(expected, actual):
    """None when equal (NaN equals NaN), else (iteration, key, expected value, actual value)."""
    for i, (e, a) in enumerate(zip(expected, actual)):
        for k in sorted(set(e) | set(a)):
            if json.dumps(e.get(k)) != json.dumps(a.get(k)):
                return i + 1, k, e.get(k), a.get(k)
    if len(expected) != len(actual):
        return len(expected), "<number of iterations>", len(expected), len(actual)
    return None


def assert_same(reference, got, label):
    (w0, r0), (w1, r1) = reference, got
    assert w0.dtype == w1.dtype and w0.shape == w1.shape, label
    if not np.array_equal(w0.view(np.uint32), w1.view(np.uint32)):
        i = int(np.flatnonzero(w0.view(np.uint32) != w1.view(np.uint32))[0])
        pytest.fail(f"{label}: final weights differ first at index {i}: {w0[i]!r} vs {w1[i]!r}")
    diff = first_difference(r0, r1)
    assert diff is None, f"{label}: iteration {diff[0]} metric {diff[1]!r}: {diff[2]!r} vs {diff[3]!r}"


@pytest.fixture(scope="module")
def reference():
    return run_ppo("local", 1)


@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_local_worker_counts(reference, num_workers):
    assert_same(reference, run_ppo("local", num_workers), f"local/{num_workers}")


@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_multiprocessing(reference, num_workers):
    assert_same(reference, run_ppo("multiprocessing", num_workers), f"multiprocessing/{num_workers}")


@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_ray(reference, ray_session, num_workers):
    assert_same(reference, run_ppo("ray", num_workers), f"ray/{num_workers}")


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory):
    return mpi_runs_in_one_job(tmp_path_factory.mktemp("mpi_agree"), "test_backends_agree", "run_ppo", WORKER_COUNTS, timeout=300)


@requires_mpi
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_mpi(reference, mpi_runs, num_workers):
    w, results = mpi_runs[num_workers]
    # Through JSON the metrics lose their tuple/float32 types the same way the reference would.
    ref = (reference[0], json.loads(json.dumps(reference[1])))
    assert_same(ref, (w, results), f"mpi/{num_workers}")
