"""Worker recovery beyond SyncSamples (real processes, real SIGKILL / SIGSTOP), one test per execution pattern:

- async gradients (A3C), async samples (IMPALA) and async replay actors (Ape-X): a killed or hung worker is
  replaced, the run completes, the replacement is recorded in the arrival schedule (-1 - worker), and replaying
  that schedule on the local backend gives bit-identical weights (the replacement is replayed too);
- sync replay (DQN), population evaluation (ES) and synchronous self-play (AlphaZero): the final weights are
  bit-identical to an unfaulted run; free-running self-play replays its faulted run from the schedule;
- async replay (Ape-X): a killed actor and a killed replay shard are both replaced and counted (the shard empty).
"""
import logging
import os
import signal
import time

import numpy as np
import pytest

import unirl

pytestmark = pytest.mark.timeout(300)

CFG = {
    "A3C": {"env": "CartPole-v1", "seed": 5, "num_workers": 2, "num_envs_per_worker": 2,
            "rollout_fragment_length": 4, "train_batch_size": 32},
    "IMPALA": {"env": "CartPole-v1", "seed": 5, "num_workers": 2, "num_envs_per_worker": 2,
               "rollout_fragment_length": 4, "train_batch_size": 16},
    "DQN": {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 2, "learning_starts": 0,
            "train_batch_size": 32, "replay_batch_size": 32, "training_intensity": 0.25,
            "model": {"hidden_sizes": [32, 32]}},
    "ES": {"env": "CartPole-v1", "num_workers": 2, "episodes_per_batch": 16, "noise_table_size": 100_000},
    "APEX": {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 2, "train_batch_size": 32,
             "learning_starts": 0, "replay_batch_size": 16, "num_replay_shards": 2, "model": {"hidden_sizes": [32, 32]}},
    "AlphaZero": {"env": "tic_tac_toe", "num_workers": 2, "games_per_iteration": 8, "games_per_chunk": 2,
                  "num_simulations": 8, "replay_batch_size": 32, "model": {"hidden_sizes": [32], "vf_share_layers": True}},
}
ITERS = 4


def worker_pid(backend, wid):
    if backend.name == "ray":
        from unirl.backends.base import WorkerHandle

        return int(backend.describe_worker(WorkerHandle(wid)).split()[1])
    return backend.worker_pids()[wid]


def faulted_run(algo, faults, backend="multiprocessing", iters=ITERS, **extra):
    """(weights, last result, recorded schedule) of a run where faults[it] = (worker id, signal) hits before iteration it."""
    with unirl.build(algo, dict(CFG[algo], backend=backend, **extra)) as a:
        for it in range(iters):
            for wid, sig in faults.get(it, []):
                os.kill(worker_pid(a.backend, wid), sig)
            r = a.train()
        return a.policy.get_flat_weights(), r, a.get_state()[1].get("arrival_schedule")


@pytest.mark.parametrize("algo,backend", [("A3C", "multiprocessing"), ("IMPALA", "multiprocessing"), ("APEX", "multiprocessing"),
                                          pytest.param("IMPALA", "ray", marks=pytest.mark.slow)])
def test_async_worker_killed_is_replaced_and_the_faulted_run_replays(algo, backend, caplog):
    if backend == "ray":
        pytest.importorskip("ray")
    with caplog.at_level(logging.WARNING, logger="unirl.recovery"):
        weights, r, schedule = faulted_run(algo, {1: [(0, signal.SIGKILL)]}, backend=backend)
    assert r["num_worker_restarts"] == 1
    assert -1 in schedule  # worker 0's replacement, at the point the driver noticed it
    msg = [m for m in caplog.messages if "failed" in m]
    assert msg and "worker 0 (pid" in msg[0], caplog.messages
    assert backend != "multiprocessing" or "killed by signal SIGKILL" in msg[0]
    replayed, _, again = faulted_run(algo, {}, backend="local", arrival_schedule=schedule)
    assert again == schedule
    np.testing.assert_array_equal(weights, replayed)


@pytest.mark.slow
def test_async_hung_worker_is_replaced_after_worker_timeout_s():
    timeout = 2.0
    with unirl.build("IMPALA", dict(CFG["IMPALA"], backend="multiprocessing", worker_timeout_s=timeout)) as a:
        a.train()
        os.kill(a.backend.worker_pids()[1], signal.SIGSTOP)  # a real hang: the process stops answering
        t0 = time.monotonic()
        while a.train()["num_worker_restarts"] == 0:
            assert time.monotonic() - t0 < 60
        assert time.monotonic() - t0 >= timeout
        schedule = a.get_state()[1]["arrival_schedule"]
        assert -2 in schedule


def test_sync_replay_killed_worker_gives_identical_weights():
    ref, _, _ = faulted_run("DQN", {})
    weights, r, _ = faulted_run("DQN", {2: [(1, signal.SIGKILL)]})
    assert r["num_worker_restarts"] == 1
    np.testing.assert_array_equal(ref, weights)


def test_self_play_killed_actor_chunks_are_redone_with_identical_weights():
    pytest.importorskip("pyspiel")
    ref, _, _ = faulted_run("AlphaZero", {})
    weights, r, _ = faulted_run("AlphaZero", {1: [(0, signal.SIGKILL)], 3: [(1, signal.SIGKILL)]})
    assert r["num_worker_restarts"] == 2
    np.testing.assert_array_equal(ref, weights)


def test_free_running_self_play_killed_actor_is_replaced_and_the_run_replays():
    pytest.importorskip("pyspiel")
    weights, r, schedule = faulted_run("AlphaZero", {1: [(0, signal.SIGKILL)]}, self_play_mode="async")
    assert r["num_worker_restarts"] == 1 and -1 in schedule
    replayed, _, again = faulted_run("AlphaZero", {}, backend="local", self_play_mode="async",
                                     arrival_schedule=schedule)
    assert again == schedule
    np.testing.assert_array_equal(weights, replayed)


def test_population_killed_worker_chunks_are_redone_with_identical_weights():
    ref, _, _ = faulted_run("ES", {})
    weights, r, _ = faulted_run("ES", {1: [(0, signal.SIGKILL)], 3: [(1, signal.SIGKILL)]})
    assert r["num_worker_restarts"] == 2
    np.testing.assert_array_equal(ref, weights)


@pytest.mark.parametrize("per_request", [1, 4])
def test_async_replay_actor_and_shard_killed_are_replaced(per_request):
    # Worker ids: actors 0, 1, then shards 2, 3. With 4 minibatches per request a lost shard may hold a
    # prefetched multi-batch request and a turn's priority message.
    with unirl.build("APEX", dict(CFG["APEX"], backend="multiprocessing", replay_batches_per_request=per_request)) as a:
        for it in range(ITERS):
            if it == 2:
                os.kill(a.backend.worker_pids()[0], signal.SIGKILL)
                os.kill(a.backend.worker_pids()[3], signal.SIGKILL)
            r = a.train()
        assert r["num_worker_restarts"] == 2
        assert a.pattern.shard_restarts == 1
        assert -1 in a.get_state()[1]["arrival_schedule"]
        assert np.isfinite(a.policy.get_flat_weights()).all()
