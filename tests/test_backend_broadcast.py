"""`Backend.broadcast`: one serialization for many workers, bit-exact, and on multiprocessing a reused
shared-memory segment that leaves nothing in /dev/shm (the every-backend check is level 1's
float32_every_worker, in tests/test_backends.py)."""
import os

import numpy as np
import pytest

import unirl
from unirl.backends import get_backend
from unirl.backends import multiprocessing as mp_backend
from unirl.conformance.workers import Echo
from unirl.errors import WorkerDiedError


def _segments():
    return sorted(f for f in os.listdir(mp_backend.SHM_DIR) if f.startswith(f"unirl-mp-{os.getpid()}-"))


@pytest.mark.timeout(120)
def test_multiprocessing_broadcast_is_bit_exact_through_one_reused_segment():
    backend = get_backend("multiprocessing")
    try:
        workers = backend.spawn(Echo, [(i,) for i in range(3)])
        big = np.random.default_rng(0).standard_normal(600_000).astype(np.float32)  # 2.4 MB: shared memory
        big[:3] = [np.nan, -0.0, np.inf]
        small = np.arange(7, dtype=np.int64)  # inline
        for round_ in range(3):
            payload = {"big": big + round_, "small": small, "text": "x"}
            out = backend.get(backend.broadcast(workers, "tagged", payload), timeout=60)
            for tag, (wid, calls, value) in enumerate(out):
                assert (wid, calls) == (tag, round_ + 1)
                assert value["big"].tobytes() == payload["big"].tobytes()
                assert value["small"].tolist() == small.tolist() and value["text"] == "x"
        # one segment, reused by every round (rewriting existing pages, not allocating new ones)
        assert backend._segments.count == 1 and len(_segments()) == 1
    finally:
        backend.shutdown()
    assert _segments() == []


@pytest.mark.timeout(120)
def test_multiprocessing_broadcast_to_a_dead_worker_fails_that_call_only():
    backend = get_backend("multiprocessing")
    try:
        workers = backend.spawn(Echo, [(i,) for i in range(2)])
        backend.call(workers[1], "crash")
        big = np.ones(1 << 19, np.float32)
        futures = backend.broadcast(workers, "array_checksum", big)
        assert backend.get(futures[0], timeout=30)[2] == float(1 << 19)
        with pytest.raises(WorkerDiedError):
            backend.get(futures[1], timeout=30)
        # the segment returns to the pool once both calls are answered, and is reused
        backend.get(backend.broadcast(workers[:1] * 2, "array_checksum", big), timeout=30)
        assert backend._segments.count == 1
    finally:
        backend.shutdown()
    assert _segments() == []


def test_local_broadcast_is_calls_in_order():
    backend = get_backend("local")
    workers = backend.spawn(Echo, [("a",), ("b",)])
    assert backend.get(backend.broadcast(workers, "tagged", 5)) == [("a", 1, 5), ("b", 1, 5)]


@pytest.mark.timeout(120)
def test_impala_train_batch_beyond_queued_fragments_does_not_wait_forever():
    # 1 actor x 2 queued fragments of 64 steps, 256 steps per learner step: the queue is topped up.
    with unirl.build("IMPALA", {"env": "CartPole-v1", "num_workers": 1, "train_batch_size": 256,
                                "max_requests_in_flight_per_worker": 2}) as algo:
        for _ in range(2):
            result = algo.train()
    assert result["timesteps_total"] == 2 * 2 * 256


def test_bench_matrix_has_ratios_to_torch_local():
    from unirl.benchmarks.backends import framework_backend_matrix

    per = {"torch": {"end_to_end_steps_per_s": 100.0, "sampling_1_worker_steps_per_s": 10.0,
                     "sampling_2_workers_steps_per_s": 19.0, "sampling_2_vs_1": 1.9, "peak_rss_per_worker_mb": 200.0},
           "jax": {"end_to_end_steps_per_s": 300.0, "sampling_1_worker_steps_per_s": 20.0,
                   "sampling_2_workers_steps_per_s": 30.0, "sampling_2_vs_1": 1.5, "peak_rss_per_worker_mb": None}}
    backends = [{"backend": b, "framework": "torch", "per_framework": per, "round_trip_us": rt,
                 "broadcast_10mb_to_4_ms": 5.0, "send_10mb_to_4_ms": 9.0, "tasks_per_s_pipelined": 1e4}
                for b, rt in (("local", 1.0), ("multiprocessing", 30.0))]
    frameworks = [{"framework": "torch", "learner_samples_per_s": 1e5, "act_1_us": 20.0, "act_64_us": 30.0},
                  {"framework": "jax", "learner_samples_per_s": 4e5, "act_1_us": 10.0, "act_64_us": 15.0}]
    rows = {(r["framework"], r["backend"]): r for r in framework_backend_matrix(backends, frameworks)}
    assert len(rows) == 4
    jax_mp = rows["jax", "multiprocessing"]
    assert jax_mp["end_to_end_steps_per_s_vs_ref"] == 3.0 and jax_mp["learner_samples_per_s_vs_ref"] == 4.0
    assert jax_mp["act_1_us_vs_ref"] == 0.5 and jax_mp["peak_rss_per_worker_mb_vs_ref"] is None
    assert jax_mp["round_trip_us"] == 30.0 and rows["torch", "local"]["sampling_2_vs_1"] == 1.9


@pytest.mark.timeout(120)
def test_bench_pipelined_tasks_and_10mb_on_multiprocessing():
    from unirl.benchmarks.backends import _pipelined_tasks_per_s, _send_10mb_ms

    backend = get_backend("multiprocessing")
    try:
        assert _pipelined_tasks_per_s(backend, num_workers=2, in_flight=8, tasks=400) > 0
        per_call_ms, broadcast_ms = _send_10mb_ms(backend, rounds=2)  # raises if an array arrives different
        assert per_call_ms > 0 and broadcast_ms > 0
    finally:
        backend.shutdown()


@pytest.mark.timeout(120)
def test_multiprocessing_broadcast_array_a_worker_keeps_is_never_overwritten():
    class Keeper:  # local: cloudpickled by value into the workers
        def __init__(self, i):
            self.kept = None

        def keep(self, array):
            self.kept = array  # a view of the shared segment, kept past the call
            return None

        def modify_and_sum(self, array):
            array += 1  # copy-on-write: the worker's own page, never the driver's file
            return float(np.sum(array, dtype=np.float64))

        def kept_bytes(self):
            return self.kept.tobytes()

    backend = get_backend("multiprocessing")
    try:
        workers = backend.spawn(Keeper, [(i,) for i in range(2)])
        first = np.arange(1 << 19, dtype=np.float32)
        backend.get(backend.broadcast(workers, "keep", first), timeout=60)
        for k in range(3):  # later broadcasts must not reuse the segment the workers still map
            other = np.full(1 << 19, -7.0 - k, np.float32)
            assert backend.get(backend.broadcast(workers, "modify_and_sum", other), timeout=60) == \
                [float(np.sum(other + 1, dtype=np.float64))] * 2
        assert backend.get([backend.call(w, "kept_bytes") for w in workers], timeout=60) == [first.tobytes()] * 2
        assert backend._segments.count == 2  # the kept one retired, the next one reused
    finally:
        backend.shutdown()
    assert _segments() == []
