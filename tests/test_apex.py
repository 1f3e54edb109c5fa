"""Ape-X: per-env epsilons keyed by global env index, runs on every backend, a schedule recorded on
one backend replays bit for bit on the others, and the checkpoint carries the replay shards."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import unirl
from unirl.algorithms.apex import ApeX, apex_epsilons
from unirl.errors import UnirlError

from conftest import MPIEXEC, REPO, requires_mpi

ITERATIONS = 6


def apex_config(backend, num_workers=2, **extra):
    config = {"env": "CartPole-v1", "framework": "torch", "backend": backend, "seed": 5, "num_workers": num_workers,
              "num_envs_per_worker": 12 // num_workers, "train_batch_size": 48, "learning_starts": 96,
              "replay_batch_size": 32, "training_intensity": 0.5, "target_network_update_freq": 96,
              "num_replay_shards": 2, "weight_sync_period": 3, "replay_buffer_capacity": 1000,
              "model": {"hidden_sizes": [32, 32], "activation": "relu"}}
    config.update(extra)
    return config


def run_apex(backend, iterations=ITERATIONS, **extra):
    """(params + target weights, arrival schedule, last result) of a short run."""
    algo = unirl.build("APEX", apex_config(backend, **extra))
    try:
        for _ in range(iterations):
            result = algo.train()
        weights = np.concatenate([algo.policy.get_flat_weights(), algo.policy.get_flat_weights("target_params")])
        return weights, algo.get_state()[1]["arrival_schedule"], result
    finally:
        algo.stop()


def check_result(result, iterations=ITERATIONS):
    assert result["timesteps_total"] == 48 * iterations
    assert result["learner/grad_steps"] > 0 and result["learner/weight_syncs"] > 2
    assert result["learner/replay_ratio"] > 0 and result["learner/weight_staleness_mean_total"] >= 0
    assert np.isfinite(result["learner/total_loss"])


def assert_same_bits(w0, w1, label):
    if not np.array_equal(w0.view(np.uint32), w1.view(np.uint32)):
        i = int(np.flatnonzero(w0.view(np.uint32) != w1.view(np.uint32))[0])
        pytest.fail(f"{label}: weights differ first at index {i}: {w0[i]!r} vs {w1[i]!r}")


@pytest.mark.timeout(120)
def test_epsilons_follow_the_formula_by_global_env_index():
    eps = apex_epsilons(8, 0.4, 7.0)
    assert eps[0] == 0.4 and np.isclose(eps[-1], 0.4 ** 8)
    np.testing.assert_allclose(eps, [0.4 ** (1 + 7.0 * i / 7) for i in range(8)])
    assert apex_epsilons(1, 0.4, 7.0).tolist() == [0.4]
    # the split over actors changes no env's epsilon
    for workers in (1, 2, 4):
        algo = unirl.build("APEX", apex_config("local", workers))
        try:
            got = np.concatenate([algo.backend._workers[h.worker_id].explore["epsilon"] for h in algo.pattern.actors])
        finally:
            algo.stop()
        assert np.array_equal(got, apex_epsilons(12, 0.4, 7.0)), workers


@pytest.fixture(scope="module")
def recorded():
    """A free-running multiprocessing run: its weights and the schedule it recorded."""
    w, schedule, result = run_apex("multiprocessing")
    check_result(result)
    # 2 actor results per iteration; every learner step recorded (id 2), never more than the cap allows
    assert sum(0 <= w < 2 for w in schedule) == 2 * ITERATIONS and schedule.count(2) == result["learner/grad_steps"]
    assert result["learner/grad_steps"] <= int(0.5 * (result["timesteps_total"] - 96))
    return w, schedule


@pytest.mark.timeout(300)
def test_local_runs_and_is_its_own_replay():
    w, schedule, result = run_apex("local")
    check_result(result)
    w2, schedule2, _ = run_apex("local", arrival_schedule=schedule)
    assert schedule2 == schedule
    assert_same_bits(w, w2, "local replay")


@pytest.mark.timeout(300)
def test_schedule_from_multiprocessing_replays_on_local(recorded):
    w, schedule = recorded
    w2, schedule2, _ = run_apex("local", arrival_schedule=schedule)
    assert schedule2 == schedule
    assert_same_bits(w, w2, "multiprocessing -> local")


@pytest.mark.timeout(300)
def test_schedule_replays_on_multiprocessing(recorded):
    w, schedule = recorded
    w2, _, _ = run_apex("multiprocessing", arrival_schedule=schedule)
    assert_same_bits(w, w2, "multiprocessing -> multiprocessing")


@pytest.mark.timeout(300)
def test_ray_runs_and_replays(recorded, ray_session):
    w_free, schedule_free, result = run_apex("ray")
    check_result(result)
    w, schedule = recorded
    w2, _, _ = run_apex("ray", arrival_schedule=schedule)
    assert_same_bits(w, w2, "multiprocessing -> ray")
    w3, _, _ = run_apex("local", arrival_schedule=schedule_free)
    assert_same_bits(w_free, w3, "ray -> local")


MPI_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_apex import run_apex
folder = sys.argv[1]
schedule = json.load(open(folder + "/schedule_in.json"))
w_free, schedule_free, result = run_apex("mpi")
w_replay, _, _ = run_apex("mpi", arrival_schedule=schedule)
np.save(folder + "/w_free.npy", w_free)
np.save(folder + "/w_replay.npy", w_replay)
json.dump({{"schedule": schedule_free, "result": result}}, open(folder + "/out.json", "w"))
"""


@requires_mpi
@pytest.mark.timeout(600)
def test_mpi_runs_and_replays(recorded, tmp_path):
    w, schedule = recorded
    (tmp_path / "schedule_in.json").write_text(json.dumps(schedule))
    script = MPI_SCRIPT.format(tests=os.path.join(REPO, "tests"))
    # 2 actors + 2 shards on 4 worker ranks
    out = subprocess.run([MPIEXEC, "-n", "5", sys.executable, "-c", script, str(tmp_path)],
                         capture_output=True, text=True, timeout=500, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    got = json.loads((tmp_path / "out.json").read_text())
    check_result(got["result"])
    assert_same_bits(w, np.load(tmp_path / "w_replay.npy"), "multiprocessing -> mpi")
    w3, _, _ = run_apex("local", arrival_schedule=got["schedule"])
    assert_same_bits(np.load(tmp_path / "w_free.npy"), w3, "mpi -> local")


@pytest.mark.timeout(120)
def test_schedule_from_another_config_is_refused():
    with pytest.raises(UnirlError, match="schedule"):
        run_apex("local", iterations=3, arrival_schedule=[0, 0, 0, 0, 7, 0])


@pytest.mark.timeout(300)
def test_checkpoint_round_trip_carries_the_shards(tmp_path):
    algo = unirl.build("APEX", apex_config("local"))
    try:
        for _ in range(4):
            algo.train()
        arrays, state = algo.get_state()
        path = algo.save(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    assert len(state["replay_shards"]) == 2 and all(m["num_rows"] > 0 for m in state["replay_shards"])
    assert any(k.startswith("replay/shard1/priorities") for k in arrays)
    other = ApeX.from_checkpoint(path)
    try:
        arrays2, state2 = other.get_state()
        assert set(arrays) == set(arrays2)
        for k in arrays:
            assert np.array_equal(arrays[k], arrays2[k]), k
        for k in ("replay_shards", "arrival_schedule", "grad_steps", "timesteps_total", "learner_rng"):
            assert json.dumps(state[k]) == json.dumps(state2[k]), k
    finally:
        other.stop()


#: 4 actors, 2 shards; the learner free-running but never below 0.5 steps per env step (the DQN rate; on a
#: shared machine the driver may get too little CPU to keep up otherwise). docs/qlearning.md has the runs.
SOLVE_CONFIG = {"env": "CartPole-v1", "seed": 0, "num_workers": 4, "num_envs_per_worker": 2, "num_replay_shards": 2,
                "min_training_intensity": 0.5}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["multiprocessing", "ray"])
def test_several_minibatches_per_shard_request_replay_bit_for_bit(backend, request):
    """replay_batches_per_request 4: a learner turn (one schedule entry, one sample request, one priority
    message) takes up to 4 steps; a free-running run's schedule replays on local."""
    if backend == "ray":
        request.getfixturevalue("ray_session")
    w, schedule, result = run_apex(backend, replay_batches_per_request=4)
    check_result(result)
    turns, steps = schedule.count(2), result["learner/grad_steps"]
    assert -(-steps // 4) <= turns < steps
    w2, schedule2, _ = run_apex("local", arrival_schedule=schedule, replay_batches_per_request=4)
    assert schedule2 == schedule
    assert_same_bits(w, w2, f"4 minibatches per request, {backend} -> local")


@pytest.mark.slow  # ~20 s on a loaded 2-core machine; the `recorded` fixture checks the schedule's learner turns in CI
@pytest.mark.timeout(300)
def test_learner_runs_free_of_the_actors_on_a_process_backend():
    """Free-running on multiprocessing, the learner's steps are not a fixed function of the env steps: they stay
    within [min_training_intensity, training_intensity] per env step past learning_starts, and the schedule
    interleaves them with actor results."""
    w, schedule, result = run_apex("multiprocessing", iterations=8, min_training_intensity=0.1)
    steps = result["timesteps_total"] - 96
    # the floor is checked before each actor result is consumed, so the last iteration's 48 steps may be owed
    assert int(0.1 * (steps - 48)) <= result["learner/grad_steps"] <= int(0.5 * steps)
    assert schedule.count(2) == result["learner/grad_steps"]


@pytest.mark.timeout(60)
def test_min_training_intensity_above_the_cap_is_refused():
    with pytest.raises(UnirlError, match="min_training_intensity"):
        unirl.build("APEX", apex_config("local", min_training_intensity=0.9))


@pytest.mark.timeout(60)
def test_no_minibatch_per_shard_request_is_refused():
    with pytest.raises(UnirlError, match="replay_batches_per_request"):
        unirl.build("APEX", apex_config("local", replay_batches_per_request=0))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("backend", ["multiprocessing", "ray", "mpi"])
def test_apex_solves_cartpole(backend):
    """The issue's target: 4 actors, 2 shards, greedy mean >= 475 within 100k env steps."""
    if backend == "mpi":
        pytest.skip("MPI needs its own job: mpiexec -n 7 python -m unirl.benchmarks.replay apex-solve --backends mpi")
    if backend == "ray":
        pytest.importorskip("ray")
    algo = unirl.build("APEX", dict(SOLVE_CONFIG, backend=backend))
    try:
        best = 0.0
        while algo.timesteps_total < 100_000 and best < 475:
            algo.train()
            if algo.iteration % 100 == 0:
                best = max(best, algo.evaluate()["evaluation/episode_return_mean"])
        assert best >= 475, best
    finally:
        algo.stop()


@pytest.mark.timeout(120)
def test_level_4_captures_a_learning_call_of_the_free_running_learner():
    """Ape-X's free-running learner makes no learning call in its first iteration on the local backend;
    level 4's capture waits for the first iteration that makes one (it failed for tf and jax before)."""
    from conformance import framework_checks as fc

    problem = fc.capture_problem("APEX", config=fc.small_config("APEX"), framework="torch")
    assert problem.batch and problem.kind in ("learn", "gradients") and problem.call_index >= 0
