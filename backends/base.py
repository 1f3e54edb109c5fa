"""The Backend protocol: stateful workers, non-blocking calls, wait-for-first-k, get, shutdown.

Usage (the same on every backend)::

    with get_backend("multiprocessing") as backend:
        workers = backend.spawn(RolloutWorker, [(spec0,), (spec1,)])
        futures = [backend.call(w, "sample", weights) for w in workers]
        ready, pending = backend.wait(futures, num_returns=1, timeout=10.0)
        batches = backend.get(futures)        # in the order asked, never arrival order

A task's exception is re-raised by `get` as `unirl.errors.WorkerError` carrying the worker's id
and traceback; a worker that dies raises `unirl.errors.WorkerDiedError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class WorkerHandle:
    """A reference to one stateful worker; `worker_id` counts from 0 in spawn order."""

    worker_id: int
    backend_key: Any = None


class Future:
    """A pending result of `call`. Backends subclass it; users only pass it back to wait/get."""

    worker_id: int = -1


class Backend:
    """Base class of the execution backends (see the module docstring)."""

    name = "base"

    def spawn(self, worker_cls: type, args_list: Sequence[tuple]) -> list[WorkerHandle]:
        """Start one worker per entry of `args_list`, each built as worker_cls(*args)."""
        raise NotImplementedError

    def call(self, handle: WorkerHandle, method: str, *args, **kwargs) -> Future:
        """Run worker.method(*args, **kwargs) without waiting; calls on one worker run in order."""
        raise NotImplementedError

    def wait(self, futures: Sequence[Future], num_returns: int = 1,
             timeout: float | None = None) -> tuple[list[Future], list[Future]]:
        """(ready, pending): returns once `num_returns` futures are done or `timeout` seconds pass."""
        raise NotImplementedError

    def get(self, futures, timeout: float | None = None):
        """The value of one future, or the values of a list of futures in the order given."""
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop every worker; leaves no process behind. Safe to call twice."""
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False
