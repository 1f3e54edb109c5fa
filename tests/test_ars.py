"""ARS: top-b directions and the update by hand, V1 vs V2, bit-identical runs on every backend and worker
count, checkpoints, learning (the runs and comparisons are test_es's helpers)."""
import json

import numpy as np
import pytest

from conftest import requires_mpi
from test_es import TINY, WORKER_COUNTS, assert_same_run, mpi_population_runs, run_population, train_until  # noqa: F401


def test_top_directions():
    from unirl.algorithms.ars import top_directions

    r = np.array([[1.0, 5.0], [4.0, 0.0], [5.0, 2.0], [0.0, 0.0]])
    assert top_directions(r, 2).tolist() == [0, 2]  # max 5 and 5: both, ties by index
    assert top_directions(r, 3).tolist() == [0, 1, 2]
    assert top_directions(r, 4).tolist() == [0, 1, 2, 3]


def test_update_by_hand():
    """M <- M + alpha / (b sigma_R) sum_k over the top b (r+ - r-) delta_k, from zero weights."""
    import unirl
    from unirl.algorithms.ars import top_directions
    from unirl.execution.population import noise_offsets

    with unirl.build("ARS", dict(TINY["ARS"])) as algo:
        assert not algo.policy.get_flat_weights().any()  # zero init
        captured = {}
        evaluate = algo.population.evaluate

        def spy(*args):
            captured["result"] = evaluate(*args)
            return captured["result"]

        algo.population.evaluate = spy
        algo.train()
        r = captured["result"]["returns"]
        c, dim = algo.config, algo.dim
        keep = top_directions(r, c.top_directions)
        offs = noise_offsets(c.seed, 0, c.num_directions, c.noise_table_size, dim)[keep]
        sigma = r[keep].std()
        step = sum((r[k, 0] - r[k, 1]) * algo.table[o:o + dim].astype(np.float64) for k, o in zip(keep, offs))
        expected = np.float32(c.step_size) * (step / (c.top_directions * sigma)).astype(np.float32)
        np.testing.assert_allclose(algo.policy.get_flat_weights(), expected, rtol=1e-6)


def test_v1_has_no_filter_and_v2_does():
    import unirl

    with unirl.build("ARS", dict(TINY["ARS"], version=1)) as v1:
        v1.train()
        assert v1.config.observation_filter == "NoFilter" and v1.obs_filter.stats.count == 0
        with pytest.raises(unirl.UnirlError, match="version"):
            unirl.build("ARS", dict(TINY["ARS"], version=1, observation_filter="MeanStdFilter"))
    with unirl.build("ARS", dict(TINY["ARS"])) as v2:
        r = v2.train()
        assert v2.obs_filter.stats.count == r["timesteps_total"]  # every state seen, merged in direction order


# -- bit-identical across backends and worker counts ------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    return run_population("ARS", "local", 1)


@pytest.mark.parametrize("num_workers", WORKER_COUNTS[1:])
def test_local_worker_counts(reference, num_workers):
    assert_same_run(reference, run_population("ARS", "local", num_workers), f"local/{num_workers}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_multiprocessing(reference, num_workers):
    assert_same_run(reference, run_population("ARS", "multiprocessing", num_workers), f"multiprocessing/{num_workers}")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_ray(reference, ray_session, num_workers):
    assert_same_run(reference, run_population("ARS", "ray", num_workers), f"ray/{num_workers}")


@requires_mpi
@pytest.mark.timeout(600)
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_mpi(reference, mpi_population_runs, num_workers):
    w, s, r = reference
    assert_same_run((w, s, json.loads(json.dumps(r))), mpi_population_runs("ARS", num_workers), f"mpi/{num_workers}")


def test_checkpoint_round_trip_resumes_bit_for_bit(tmp_path):
    import unirl

    with unirl.build("ARS", dict(TINY["ARS"])) as a:
        a.train()
        path = a.save(str(tmp_path / "ckpt"))
        with unirl.restore(path) as b:
            sa, sb = a.get_state()[0], b.get_state()[0]
            assert sorted(sa) == sorted(sb)
            assert all(np.asarray(sa[k]).tobytes() == np.asarray(sb[k]).tobytes() for k in sa)
            a.train()
            b.train()
            assert a.policy.get_flat_weights().tobytes() == b.policy.get_flat_weights().tobytes()
            assert a.obs_filter.get_state()["mean"].tobytes() == b.obs_filter.get_state()["mean"].tobytes()


# -- learning ---------------------------------------------------------------------------------------------
@pytest.mark.timeout(300)
@pytest.mark.parametrize("version", [1, 2])
def test_ars_solves_cartpole(version):
    import unirl

    with unirl.build("ARS", {"env": "CartPole-v1", "version": version, "noise_table_size": 100_000}) as a:
        score, episodes, steps, wall = train_until(a, 475.0, 90.0)
    print(f"ARS V{version} CartPole-v1: greedy mean {score:.1f} after {episodes} episodes, {steps} steps, {wall:.1f} s")
    assert score >= 475.0


@pytest.mark.timeout(300)
def test_ars_v2_solves_a_continuous_task():
    """Box actions (clipped linear outputs): MountainCarContinuous-v0's 'solved' is a mean of 90."""
    import unirl

    config = {"env": "MountainCarContinuous-v0", "noise_table_size": 100_000, "num_directions": 8,
              "top_directions": 4, "step_size": 0.1, "delta_std": 0.5}
    with unirl.build("ARS", config) as a:
        score, episodes, steps, wall = train_until(a, 90.0, 90.0)
    print(f"ARS V2 MountainCarContinuous-v0: greedy mean {score:.1f} after {episodes} episodes, {steps} steps, {wall:.1f} s")
    assert score >= 90.0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ars_v1_swimmer_reaches_the_papers_threshold():
    """Mania et al.'s Swimmer setting (V1, N = b = 1, alpha 0.02, nu 0.01); their threshold is 325."""
    pytest.importorskip("mujoco", reason="MuJoCo is not installed (pip install 'unirl[mujoco]')")
    import unirl

    config = {"env": "Swimmer-v5", "version": 1, "noise_table_size": 100_000, "num_directions": 1,
              "top_directions": 1, "step_size": 0.02, "delta_std": 0.01}
    with unirl.build("ARS", config) as a:
        score, episodes, steps, wall = train_until(a, 325.0, 600.0, eval_episodes=20)
    print(f"ARS V1 Swimmer-v5: greedy mean {score:.1f} after {episodes} episodes, {steps} steps, {wall:.1f} s")
    assert score >= 325.0
