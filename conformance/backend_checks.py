"""Reusable checks that an execution backend meets the Backend protocol (conformance level 1).

Every check takes a backend factory (a zero-argument callable returning a started Backend; see
`backend_factory` to make one from a name, an import path `pkg.mod:Class` or a class), starts its
own backend, shuts it down, and returns a `CheckResult` (ok flag, what differed, numbers)
instead of asserting. Workers are `unirl.conformance.workers.Echo`.

Functions:

- `backend_factory(spec, **options)` -> zero-argument callable returning a started Backend.
- `check_ordering(factory)`: `get` returns values in the order asked, never arrival order, and
  calls on one worker run in the order made.
- `check_wait_first_k(factory, expect_async=None)`: `wait` returns the first k of n finished
  futures without waiting for slow ones, honours its timeout, and results can be consumed as
  they arrive.
- `check_exception(factory)`: a task's exception comes back as `WorkerError` with the worker's
  id, exception type and traceback; the worker keeps serving.
- `check_killed_worker(factory, how="exit", timeout=60)`: a worker process that ends
  (`os._exit`, or `how="kill"`: SIGKILL) raises `WorkerDiedError` for its pending calls within
  the timeout; the other workers keep serving.
- `check_array_roundtrip(factory, nbytes=100 MB)`: an array sent to a worker and back is
  bit-exact (first differing index and both values otherwise); reports MB/s.
- `check_float32_every_worker(factory, num_workers=4)`: a float32 array of more than a million
  elements (NaN, -0.0, infinities, subnormals, full mantissas) and a real policy weight vector
  reach every one of `num_workers` workers bit-exact, come back from each bit-exact (made in the
  worker), and survive the round trip; a backend that rounds, compresses or casts large arrays,
  or handles some worker differently, fails with the direction, worker and first differing index.
- `check_log_forwarding(factory)`: a worker's log record reaches the driver's logging tree,
  tagged `[worker N]`.
- `check_clean_shutdown(factory, timeout=15)`: shutdown twice is fine and no worker process is
  left (for backends whose worker processes belong to a job that outlives the backend, e.g. MPI
  ranks, only that the workers were released).
- `run_backend_checks(factory, checks=None)` -> list[CheckResult]: all of the above.

Backends whose workers live in the driver's process (`runs_in_driver = True`, e.g. local) skip
the checks that would kill or time the driver itself; a skip says why.
"""
from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np

from unirl.backends.base import pid_alive
from unirl.conformance.workers import BIG_FLOAT32_ELEMENTS, MAKERS, Echo, bit_difference
from unirl.errors import WorkerDiedError, WorkerError

MB = 1 << 20


@dataclass
class CheckResult:
    """The outcome of one check: ok, skipped, a one-line detail and numbers (first differing index, values, seconds)."""

    check: str
    backend: str
    ok: bool
    detail: str = ""
    skipped: bool = False
    data: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self):
        status = "skip" if self.skipped else ("ok" if self.ok else "FAIL")
        return f"[{status}] {self.backend}: {self.check} ({self.seconds:.2f}s) {self.detail}"


def backend_factory(spec, **options):
    """A zero-argument callable that returns a started backend, from a name, `pkg.mod:Class`, a class or a factory."""
    if isinstance(spec, str):
        from unirl.backends import get_backend_class

        cls = get_backend_class(spec)
        return lambda: cls(**options)
    if isinstance(spec, type):
        return lambda: spec(**options)
    return spec


def _runner(check_name):
    """Wraps a check: builds the backend, times it, shuts it down, turns an unexpected exception into a failure."""

    def decorate(fn):
        def run(factory, *args, **kwargs):
            t0 = time.perf_counter()
            backend = None
            name = "?"
            try:
                backend = factory()
                name = getattr(backend, "name", type(backend).__name__)
                result = fn(backend, *args, **kwargs)
            except Exception as e:
                result = CheckResult(check_name, name, False,
                                     f"unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                                     data={"traceback": traceback.format_exc()})
            finally:
                if backend is not None:
                    try:
                        backend.shutdown()
                    except Exception as e:
                        result = CheckResult(check_name, name, False, f"shutdown raised {type(e).__name__}: {e}")
            result.check, result.backend = check_name, name
            result.seconds = time.perf_counter() - t0
            return result

        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run

    return decorate


def _result(ok, detail="", **data):
    return CheckResult("", "", bool(ok), detail, data=data)


def _skip(detail):
    return CheckResult("", "", True, detail, skipped=True)


def _first_difference(expected: list, actual: list) -> dict:
    for i, (a, b) in enumerate(zip(expected, actual)):
        if a != b:
            return {"first_index": i, "expected": repr(a), "actual": repr(b)}
    return {"first_index": min(len(expected), len(actual)), "expected_len": len(expected), "actual_len": len(actual)}


@_runner("ordering")
def check_ordering(backend):
    """get returns values in the order asked; calls on one worker run in the order made."""
    workers = backend.spawn(Echo, [(i,) for i in range(3)])
    # Worker 0's first call is slow, so later results arrive before it: arrival order != asked order.
    futures = [backend.call(workers[0], "sleep", 0.3, "slow")]
    expected = ["slow"]
    calls = [0, 0, 0]
    for i in range(30):
        w = i % 3
        calls[w] += 1
        futures.append(backend.call(workers[w], "tagged", i))
        expected.append((w, calls[w], i))
    values = [tuple(v) if isinstance(v, (list, tuple)) else v for v in backend.get(futures, timeout=120)]
    if values != expected:
        return _result(False, "values differ from the order asked", **_first_difference(expected, values))
    return _result(True, f"{len(values)} values in the order asked")


@_runner("wait_first_k")
def check_wait_first_k(backend, expect_async=None):
    """wait returns the first k finished futures without waiting for the slow one, and honours its timeout."""
    if expect_async is None:
        expect_async = not getattr(backend, "runs_in_driver", False)
    workers = backend.spawn(Echo, [(i,) for i in range(3)])
    slow = 1.5
    futures = [backend.call(workers[0], "sleep", slow, 0), backend.call(workers[1], "sleep", 0.0, 1),
               backend.call(workers[2], "sleep", 0.05, 2)]
    t0 = time.perf_counter()
    ready, pending = backend.wait(futures, num_returns=2, timeout=60)
    took = time.perf_counter() - t0
    data = {"wait_2_of_3_s": round(took, 4)}
    if len(ready) != 2 or len(ready) + len(pending) != 3 or {id(f) for f in ready + pending} != {id(f) for f in futures}:
        return _result(False, f"wait(num_returns=2) gave {len(ready)} ready and {len(pending)} pending of 3", **data)
    if not expect_async:
        values = backend.get(futures)
        return _result(values == [0, 1, 2], "synchronous backend: ready/pending partition and values checked", **data)
    got = sorted(backend.get(ready))
    if got != [1, 2] or took > slow * 0.8:
        return _result(False, f"wait returned values {got} after {took:.2f}s; expected the two fast ones [1, 2] "
                              f"well before the slow one ({slow}s)", **data)
    t1 = time.perf_counter()
    ready2, pending2 = backend.wait(pending, num_returns=1, timeout=0.2)
    waited = time.perf_counter() - t1
    data["timeout_0.2_s"] = round(waited, 4)
    if ready2 or len(pending2) != 1 or waited < 0.15 or waited > 2.0:
        return _result(False, f"wait(timeout=0.2) on the slow task returned {len(ready2)} ready after {waited:.2f}s",
                       **data)
    # Consume as they arrive: three tasks finishing in reverse order of submission.
    futs = [backend.call(workers[i], "sleep", 0.6 - 0.25 * i, i) for i in range(3)]
    order, left = [], futs
    while left:
        r, left = backend.wait(left, num_returns=1, timeout=30)
        if not r:
            return _result(False, "wait(num_returns=1) timed out while consuming as they arrive", **data)
        order.append(backend.get(r[0]))
    backend.get(pending2, timeout=60)
    data["arrival_order"] = order
    if order != [2, 1, 0]:
        return _result(False, f"results consumed in order {order}, expected arrival order [2, 1, 0]", **data)
    return _result(True, f"first 2 of 3 after {took:.3f}s (slow task {slow}s); timeout honoured; arrival order {order}",
                   **data)


@_runner("exception")
def check_exception(backend):
    """A task's exception is re-raised as WorkerError with the worker id, type and remote traceback."""
    workers = backend.spawn(Echo, [(i,) for i in range(2)])
    try:
        backend.get(backend.call(workers[1], "fail", "boom-4711"), timeout=60)
    except WorkerError as e:
        problems = []
        if e.worker_id != 1:
            problems.append(f"worker_id {e.worker_id} != 1")
        if e.exc_type != "ValueError":
            problems.append(f"exc_type {e.exc_type!r} != 'ValueError'")
        tb = e.remote_traceback or ""
        for needle in ("boom-4711", "in fail", "workers.py"):
            if needle not in tb:
                problems.append(f"remote traceback lacks {needle!r}")
        if "worker 1" not in str(e):
            problems.append("message does not name worker 1")
        after = backend.get(backend.call(workers[1], "echo", "still here"), timeout=60)
        if after != "still here":
            problems.append(f"worker answered {after!r} after the exception")
        return _result(not problems, "; ".join(problems) or "WorkerError with id, type and traceback; worker still serves",
                       remote_traceback=tb)
    except Exception as e:
        return _result(False, f"raised {type(e).__name__} instead of WorkerError: {e}")
    return _result(False, "no exception was raised")


@_runner("killed_worker")
def check_killed_worker(backend, how="exit", timeout=60.0):
    """A worker process that ends raises WorkerDiedError for its pending calls within `timeout`; others serve on."""
    if getattr(backend, "runs_in_driver", False):
        return _skip("workers run in the driver's process; ending one would end the driver")
    workers = backend.spawn(Echo, [(i,) for i in range(2)])
    backend.get([backend.call(w, "noop") for w in workers], timeout=60)
    crash = backend.call(workers[1], "crash", how)
    after = backend.call(workers[1], "echo", "never")
    t0 = time.perf_counter()
    problems = []
    for label, fut in (("the crashing call", crash), ("a call queued behind it", after)):
        try:
            backend.get(fut, timeout=timeout)
            problems.append(f"{label} returned a value")
        except WorkerDiedError as e:
            if e.worker_id != 1:
                problems.append(f"{label}: WorkerDiedError names worker {e.worker_id}, not 1")
            detail = str(e)
        except TimeoutError:
            return _result(False, f"{label} was still pending after {timeout}s: the dead worker was not detected")
        except Exception as e:
            problems.append(f"{label} raised {type(e).__name__} instead of WorkerDiedError: {e}")
    took = time.perf_counter() - t0
    try:
        if backend.get(backend.call(workers[0], "echo", 7), timeout=60) != 7:
            problems.append("the surviving worker answered wrongly")
    except Exception as e:
        problems.append(f"the surviving worker failed: {type(e).__name__}: {e}")
    return _result(not problems, "; ".join(problems) or f"detected in {took:.2f}s: {detail}", detect_s=round(took, 3))


def special_array(nbytes: int, seed: int = 0) -> np.ndarray:
    """About `nbytes` of float64 with NaN, -0.0, infinities and subnormals at the front (bit-exactness bait)."""
    a = np.random.default_rng(seed).standard_normal(max(8, nbytes // 8))
    a[:6] = [np.nan, -0.0, np.inf, -np.inf, 5e-324, np.finfo(np.float64).max]
    return a


def compare_bits(expected: np.ndarray, actual) -> dict:
    """{} when bit-identical, else the first differing index and both values (and shape/dtype mismatches)."""
    actual = np.asarray(actual)
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return {"expected_shape": list(expected.shape), "actual_shape": list(actual.shape),
                "expected_dtype": str(expected.dtype), "actual_dtype": str(actual.dtype)}
    e = np.ascontiguousarray(expected).view(np.uint8).reshape(-1)
    a = np.ascontiguousarray(actual).view(np.uint8).reshape(-1)
    diff = np.flatnonzero(e != a)
    if not len(diff):
        return {}
    i = int(diff[0]) // expected.itemsize
    flat_e, flat_a = expected.reshape(-1), actual.reshape(-1)
    return {"first_index": i, "expected": repr(flat_e[i]), "actual": repr(flat_a[i]),
            "differing_bytes": int(len(diff))}


@_runner("array_roundtrip")
def check_array_roundtrip(backend, nbytes=100 * MB):
    """An array sent to a worker and back is bit-exact."""
    workers = backend.spawn(Echo, [(0,)])
    array = special_array(nbytes)
    t0 = time.perf_counter()
    back = backend.get(backend.call(workers[0], "array_roundtrip", array), timeout=300)
    took = time.perf_counter() - t0
    diff = compare_bits(array, back)
    mb_s = 2 * array.nbytes / MB / max(took, 1e-9)
    if diff:
        return _result(False, f"the {array.nbytes / MB:.0f} MB array came back different", **diff)
    return _result(True, f"{array.nbytes / MB:.0f} MB there and back bit-exact in {took:.2f}s ({mb_s:.0f} MB/s)",
                   roundtrip_s=round(took, 4), mb_per_s=round(mb_s, 1))


#: Workers of the every-worker transfer check (the 3rd and 4th are where a per-worker fault hides).
TRANSFER_WORKERS = 4


@_runner("float32_every_worker")
def check_float32_every_worker(backend, num_workers=TRANSFER_WORKERS, elements=BIG_FLOAT32_ELEMENTS):
    """A >1M-element float32 array and the policy weights reach every worker bit-exact, in both directions
    (driver -> worker both by `call` and by `broadcast`)."""
    workers = backend.spawn(Echo, [(i,) for i in range(num_workers)])
    payloads = [("special_float32", (elements, 0)), ("policy_weights", (0,))]
    t0 = time.perf_counter()
    checked = 0
    for maker, args in payloads:
        array = MAKERS[maker](*args)
        what = f"the {array.size:,}-element {array.dtype} array `{maker}`"
        # driver -> worker: each worker compares what arrived with the same array made there
        there = backend.get([backend.call(w, "received_difference", array, maker, *args) for w in workers],
                            timeout=300)
        # driver -> every worker at once: `broadcast` (one serialization; shared memory, ray.put, ...)
        broadcast = getattr(backend, "broadcast", None)
        there_all = (backend.get(broadcast(workers, "received_difference", array, maker, *args), timeout=300)
                     if broadcast is not None else [None] * num_workers)
        # worker -> driver: each worker makes it and sends it
        back = backend.get([backend.call(w, "make", maker, *args) for w in workers], timeout=300)
        # there and back
        round_trip = backend.get([backend.call(w, "array_roundtrip", array) for w in workers], timeout=300)
        for i in range(num_workers):
            for direction, diff in (("driver -> worker", there[i]), ("driver -> every worker (broadcast)", there_all[i]),
                                    ("worker -> driver", bit_difference(array, back[i])),
                                    ("round trip", bit_difference(array, round_trip[i]))):
                checked += 1
                if diff:
                    return _result(False, f"{what}: {direction} (worker {i} of {num_workers}) is not bit-exact",
                                   direction=direction, worker=i, array=maker, elements=int(array.size), **diff)
    took = time.perf_counter() - t0
    return _result(True, f"a {elements:,}-element float32 array and the {MAKERS['policy_weights']().size:,} policy "
                         f"weights bit-exact to and from each of {num_workers} workers ({checked} transfers checked, "
                         f"{took:.2f}s)", seconds_all=round(took, 3))


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@_runner("log_forwarding")
def check_log_forwarding(backend):
    """A worker's log record reaches the driver's logging tree, tagged with the worker's id."""
    log = logging.getLogger("unirl.conformance.echo")
    handler, old_level = _Collect(), log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        workers = backend.spawn(Echo, [(i,) for i in range(2)])
        backend.get(backend.call(workers[1], "log", "hello-from-the-worker", logging.WARNING), timeout=60)
        messages = [r.getMessage() for r in handler.records]
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    hits = [m for m in messages if "hello-from-the-worker" in m]
    if not hits:
        return _result(False, f"the record did not reach the driver (got {messages})")
    if getattr(backend, "runs_in_driver", False) or "[worker 1]" in hits[0]:
        return _result(True, f"driver got {hits[0]!r}")
    return _result(False, f"the record is not tagged with the worker's id: {hits[0]!r}")


@_runner("clean_shutdown")
def check_clean_shutdown(backend, timeout=15.0):
    """shutdown twice is fine and no worker process is left behind."""
    workers = backend.spawn(Echo, [(i,) for i in range(2)])
    pids = sorted({p for p, _ in backend.get([backend.call(w, "whereami") for w in workers], timeout=60)})
    backend.shutdown()
    backend.shutdown()
    if getattr(backend, "runs_in_driver", False):
        return _result(True, "workers ran in the driver; shutdown twice raised nothing")
    if getattr(backend, "processes_end_with_job", False):
        return _result(True, "workers released (their processes are the job's ranks and end with the job)",
                       pids=pids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids if p != os.getpid()):
        time.sleep(0.05)
    left = [p for p in pids if p != os.getpid() and pid_alive(p)]
    if left:
        return _result(False, f"worker processes still alive {timeout}s after shutdown: {left}", pids=pids)
    return _result(True, f"worker processes {pids} gone after shutdown", pids=pids)


ALL_CHECKS = (check_ordering, check_wait_first_k, check_exception, check_killed_worker, check_array_roundtrip,
              check_float32_every_worker, check_log_forwarding, check_clean_shutdown)


def run_backend_checks(factory, checks=None) -> list[CheckResult]:
    """Run the checks (all by default) against a backend factory or spec; one CheckResult each."""
    factory = backend_factory(factory)
    return [check(factory) for check in (checks or ALL_CHECKS)]
