"""ES: the shared noise table, centered ranks, global perturbation indices, bit-identical runs on every
backend and worker count, checkpoints, learning.

The bit-identity runs (2 iterations of a tiny config) compare final weights, optimizer state,
observation filter and every per-iteration metric but the time fields with local / 1 worker.
"""
import hashlib
import json
import os
import subprocess
import sys
import time

import gymnasium as gym
import numpy as np
import pytest

from conftest import MPIEXEC, REPO, requires_mpi

WORKER_COUNTS = (1, 2, 3, 4)
TIME_FIELDS = ("time_this_iter_s", "time_total_s", "env_steps_per_s")

TINY = {
    "ES": {"env": "CartPole-v1", "framework": "torch", "seed": 3, "episodes_per_batch": 14,
           "noise_table_size": 200_000, "model": {"hidden_sizes": [8]}, "max_episode_steps": 60},
    "ARS": {"env": "CartPole-v1", "framework": "torch", "seed": 3, "num_directions": 7, "top_directions": 3,
            "noise_table_size": 200_000, "max_episode_steps": 60},
}


def run_population(algo: str, backend: str, num_workers: int, iterations: int = 2, **overrides):
    """(final flat weights, algorithm state arrays (weights, optimizer, filter), per-iteration results without time)."""
    import unirl

    config = dict(TINY[algo], backend=backend, num_workers=num_workers, **overrides)
    a = unirl.build(algo, config)
    try:
        results = [{k: v for k, v in a.train().items() if k not in TIME_FIELDS and k != "weights_digest"}
                   for _ in range(iterations)]
        arrays, _ = a.get_state()
        return a.policy.get_flat_weights(), arrays, results
    finally:
        a.stop()


def assert_same_run(reference, got, label):
    (w0, s0, r0), (w1, s1, r1) = reference, got
    assert w0.tobytes() == w1.tobytes(), f"{label}: final weights differ"
    assert sorted(s0) == sorted(s1), label
    for k in s0:
        assert np.asarray(s0[k]).tobytes() == np.asarray(s1[k]).tobytes(), f"{label}: state {k} differs"
    assert json.dumps(r0) == json.dumps(r1), f"{label}: metrics differ"


# -- the noise table and perturbation indices ------------------------------------------------------
NOISE_DIGEST = ("import hashlib, sys; from unirl.execution.population import noise_table; "
                "print(hashlib.sha256(noise_table(int(sys.argv[1]), int(sys.argv[2])).tobytes()).hexdigest())")


def test_noise_table_is_the_same_in_another_process():
    from unirl.execution.population import noise_table

    table = noise_table(5, 300_000)
    assert table.dtype == np.float32 and not table.flags.writeable
    assert abs(float(table.mean())) < 0.01 and abs(float(table.std()) - 1) < 0.01
    out = subprocess.run([sys.executable, "-c", NOISE_DIGEST, "5", "300000"], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == hashlib.sha256(table.tobytes()).hexdigest()
    assert noise_table(6, 300_000).tobytes() != table.tobytes()


@pytest.mark.timeout(300)
def test_noise_table_is_the_same_in_a_multiprocessing_worker():
    """The bits a backend worker process builds equal the driver's (no table is ever shipped)."""
    import unirl
    from unirl.backends import get_backend
    from unirl.execution.population import PopulationSpec, PopulationWorker, noise_table

    with unirl.build("ES", dict(TINY["ES"])) as algo:
        spec = PopulationSpec(algo.acting_policy, "CartPole-v1", {}, 7, 100_000)
    with get_backend("multiprocessing") as backend:
        [w] = backend.spawn(PopulationWorker, [(spec,)])
        digest = backend.get(backend.call(w, "noise_table_digest"), timeout=120)
    assert digest == hashlib.sha256(noise_table(7, 100_000).tobytes()).hexdigest()


def test_offsets_and_episode_seeds_depend_on_the_global_index_only():
    from unirl.execution.population import episode_seed, noise_offset, noise_offsets

    offs = noise_offsets(0, 10, 5, 1000, 100)
    assert offs.tolist() == [noise_offset(0, g, 1000, 100) for g in range(10, 15)]
    assert all(0 <= o <= 900 for o in offs)
    assert len(set(noise_offsets(0, 0, 50, 10**6, 10))) > 45
    assert episode_seed(0, 3) == episode_seed(0, 3) != episode_seed(0, 4)
    with pytest.raises(Exception, match="noise_table_size"):
        noise_offset(0, 0, 10, 11)


def test_a_worker_evaluates_a_perturbation_the_same_in_any_range():
    import unirl
    from unirl.execution.population import PopulationSpec, PopulationWorker

    algo = unirl.build("ES", dict(TINY["ES"]))
    try:
        spec = PopulationSpec(algo.acting_policy, "CartPole-v1", {}, 3, 200_000, observation_filter=True,
                              max_episode_steps=60)
        w = PopulationWorker(spec)
        w.set_weights(algo.policy.get_flat_weights(), algo.obs_filter.snapshot())
        whole = w.evaluate(0, 10, 0.05)
        part = PopulationWorker(spec)
        part.set_weights(algo.policy.get_flat_weights(), algo.obs_filter.snapshot())
        piece = part.evaluate(6, 9, 0.05)
        for k in whole:
            assert whole[k][6:9].tobytes() == piece[k].tobytes(), k
        assert whole["returns"].shape == (10, 2) and whole["obs_mean"].shape == (10, 4)
    finally:
        algo.stop()


def test_weighted_noise_sum_matches_reference():
    from unirl.execution.population import weighted_noise_sum

    table = np.random.default_rng(0).standard_normal(5000).astype(np.float32)
    offs = np.array([0, 17, 4000, 17, 999])
    w = np.array([0.5, -1.0, 2.0, 0.25, 3.0])
    ref = sum(wi * table[o:o + 300].astype(np.float64) for wi, o in zip(w, offs))
    np.testing.assert_allclose(weighted_noise_sum(table, offs, w, 300), ref, rtol=1e-12)


# -- fitness shaping -------------------------------------------------------------------------------
def reference_centered_ranks(x):
    """Salimans et al.'s es_distributed/es.py: compute_ranks, then / (size - 1) - 0.5."""
    ranks = np.empty(x.size, dtype=int)
    ranks[x.ravel().argsort()] = np.arange(x.size)
    y = ranks.reshape(x.shape).astype(np.float32)
    y /= (x.size - 1)
    y -= .5
    return y


def test_centered_ranks_match_the_reference():
    from unirl.algorithms.es import centered_ranks

    x = np.random.default_rng(1).normal(size=(50, 2))
    np.testing.assert_array_equal(centered_ranks(x), reference_centered_ranks(x))
    r = centered_ranks(np.array([[3.0, 1.0], [2.0, 5.0]]))
    np.testing.assert_allclose(r, [[1 / 6, -0.5], [-1 / 6, 0.5]], rtol=1e-6)
    assert r.dtype == np.float32
    ties = centered_ranks(np.array([[1.0, 1.0], [1.0, 1.0]]))  # ties broken by position, deterministically
    np.testing.assert_allclose(ties.ravel(), [-0.5, -1 / 6, 1 / 6, 0.5], rtol=1e-6)


def test_gradient_is_the_rank_weighted_noise_and_adam_applies_it():
    """One ES step by hand (ranks, noise slices, L2 + Adam in NumPy) equals the algorithm's."""
    import unirl
    from unirl.algorithms.es import centered_ranks
    from unirl.execution.population import noise_offsets

    algo = unirl.build("ES", dict(TINY["ES"], l2_coeff=0.01))
    try:
        theta = algo.policy.get_flat_weights()
        captured = {}
        evaluate = algo.population.evaluate

        def spy(*args):
            captured["result"] = evaluate(*args)
            return captured["result"]

        algo.population.evaluate = spy
        algo.train()
        returns = captured["result"]["returns"]
        n, dim, c = len(returns), algo.dim, algo.config
        offs = noise_offsets(c.seed, 0, n, c.noise_table_size, dim)
        ranks = centered_ranks(returns).astype(np.float64)
        g = sum((ranks[i, 0] - ranks[i, 1]) * algo.table[o:o + dim].astype(np.float64) for i, o in enumerate(offs))
        grad = (-g / returns.size).astype(np.float32) + np.float32(0.01) * theta
        mu = np.float32(0.1) * grad
        nu = np.float32(0.001) * grad * grad
        step = -np.float32(c.stepsize) * (mu / np.float32(0.1)) / (np.sqrt(nu / np.float32(0.001)) + np.float32(1e-8))
        np.testing.assert_allclose(algo.policy.get_flat_weights(), theta + step, rtol=1e-5, atol=1e-7)
    finally:
        algo.stop()


# -- bit-identical across backends and worker counts ------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    return run_population("ES", "local", 1)


@pytest.mark.parametrize("num_workers", WORKER_COUNTS[1:])
def test_local_worker_counts(reference, num_workers):
    assert_same_run(reference, run_population("ES", "local", num_workers), f"local/{num_workers}")


def test_chunk_size_changes_nothing(reference):
    assert_same_run(reference, run_population("ES", "local", 2, chunk_size=1), "local/2/chunk 1")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_multiprocessing(reference, num_workers):
    assert_same_run(reference, run_population("ES", "multiprocessing", num_workers), f"multiprocessing/{num_workers}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_ray(reference, ray_session, num_workers):
    assert_same_run(reference, run_population("ES", "ray", num_workers), f"ray/{num_workers}")


@pytest.mark.timeout(600)
def test_framework_forward_on_workers_learns_the_same_way():
    """Workers acting through the torch adapter instead of NumPy: same returns here (a tiny net whose
    argmax never sits on a last-bit tie), so the same weights."""
    ref = run_population("ES", "local", 1)
    got = run_population("ES", "multiprocessing", 2, worker_forward="framework")
    assert_same_run(ref, got, "multiprocessing/2/framework forward")


MPI_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_es import run_population, WORKER_COUNTS
out = {{}}
for algo in ("ES", "ARS"):
    for n in WORKER_COUNTS:
        w, state, results = run_population(algo, "mpi", n)
        np.save(f"{{sys.argv[1]}}/{{algo}}_weights_{{n}}.npy", w)
        np.savez(f"{{sys.argv[1]}}/{{algo}}_state_{{n}}.npz", **state)
        out[f"{{algo}}/{{n}}"] = results
with open(f"{{sys.argv[1]}}/results.json", "w") as f:
    json.dump(out, f)
"""


@pytest.fixture(scope="session")
def mpi_population_runs(tmp_path_factory):
    """ES and ARS on MPI with 1-4 workers, in one mpiexec job of 5 ranks (shared by test_es and test_ars)."""
    folder = tmp_path_factory.mktemp("mpi_population")
    script = MPI_SCRIPT.format(tests=os.path.join(REPO, "tests"))
    out = subprocess.run([MPIEXEC, "-n", str(max(WORKER_COUNTS) + 1), sys.executable, "-c", script, str(folder)],
                         capture_output=True, text=True, timeout=500, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    results = json.loads((folder / "results.json").read_text())

    def load(algo, n):
        with np.load(folder / f"{algo}_state_{n}.npz") as z:
            state = {k: z[k] for k in z.files}
        return np.load(folder / f"{algo}_weights_{n}.npy"), state, results[f"{algo}/{n}"]

    return load


@requires_mpi
@pytest.mark.timeout(600)
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_mpi(reference, mpi_population_runs, num_workers):
    w, s, r = reference
    assert_same_run((w, s, json.loads(json.dumps(r))), mpi_population_runs("ES", num_workers), f"mpi/{num_workers}")


# -- checkpoints --------------------------------------------------------------------------------------
def test_checkpoint_round_trip_resumes_bit_for_bit(tmp_path):
    import unirl

    config = dict(TINY["ES"])
    a = unirl.build("ES", config)
    try:
        a.train()
        a.train()
        path = a.save(str(tmp_path / "ckpt"))
        arrays, state = a.get_state()
        assert any(k.startswith("opt/") for k in arrays) and any(k.startswith("filter/") for k in arrays)
        assert state["perturbations_total"] == 14
        b = unirl.restore(path)
        try:
            arrays_b, _ = b.get_state()
            for k in arrays:
                assert np.asarray(arrays[k]).tobytes() == np.asarray(arrays_b[k]).tobytes(), k
            ra, rb = a.train(), b.train()
            assert a.policy.get_flat_weights().tobytes() == b.policy.get_flat_weights().tobytes()
            assert ra["episode_returns_this_iter"] == rb["episode_returns_this_iter"]
            assert a.obs_filter.get_state()["m2"].tobytes() == b.obs_filter.get_state()["m2"].tobytes()
        finally:
            b.stop()
    finally:
        a.stop()


# -- Box actions ------------------------------------------------------------------------------------------
def test_box_actions_are_clipped_outputs():
    from unirl.distributions import Deterministic, for_action_space

    d = for_action_space(gym.spaces.Box(-2.0, 2.0, (1,)), "policy")
    assert isinstance(d, Deterministic) and d.num_inputs == 1 and d.action_shape == (1,)
    np.testing.assert_array_equal(d.greedy_numpy(np.array([[3.0], [-0.5]])), [[2.0], [-0.5]])
    assert d.greedy_numpy(np.array([[3.0]])).dtype == np.float32


def test_config_errors_are_one_sentence():
    import unirl

    with pytest.raises(unirl.UnirlError, match="episodes_per_batch"):
        unirl.build("ES", {"episodes_per_batch": 7})
    with pytest.raises(unirl.UnirlError, match="worker_forward"):
        unirl.build("ES", {"worker_forward": "gpu"})
    with pytest.raises(unirl.UnirlError, match="noise_table_size"):
        unirl.build("ES", {"noise_table_size": 100})


# -- learning ---------------------------------------------------------------------------------------------
def train_until(algo, score: float, seconds: float, eval_episodes: int = 20):
    """(evaluation mean, episodes, env steps, wall seconds) once the greedy evaluation reaches `score`."""
    t0 = time.perf_counter()
    best = -np.inf
    while time.perf_counter() - t0 < seconds:
        r = algo.train()
        if r["episode_return_mean"] >= 0.9 * score or not np.isfinite(best):
            best = algo.evaluate(eval_episodes)["evaluation/episode_return_mean"]
            if best >= score:
                break
    return best, algo.episodes_total, algo.timesteps_total, time.perf_counter() - t0


@pytest.mark.timeout(300)
def test_es_solves_cartpole():
    import unirl

    with unirl.build("ES", {"env": "CartPole-v1", "noise_table_size": 1_000_000}) as a:
        score, episodes, steps, wall = train_until(a, 475.0, 90.0)
    print(f"ES CartPole-v1: greedy mean {score:.1f} after {episodes} episodes, {steps} steps, {wall:.1f} s")
    assert score >= 475.0
