"""The local backend: workers live in the driver's process; every call runs at once. The reference backend."""
from __future__ import annotations

import traceback

from unirl.backends import base
from unirl.errors import WorkerError


class LocalFuture(base.Future):
    __slots__ = ("worker_id", "value", "error")

    def __init__(self, worker_id, value=None, error=None):
        self.worker_id = worker_id
        self.value = value
        self.error = error


class Backend(base.Backend):
    name = "local"
    runs_in_driver = True

    def __init__(self, **_ignored):
        self._workers: dict[int, object] = {}
        self._recipes: dict[int, tuple] = {}  # worker id -> (class, args): what `restart` rebuilds

    def spawn(self, worker_cls, args_list):
        handles = []
        for args in args_list:
            wid = len(self._workers)
            self._recipes[wid] = (worker_cls, tuple(args))
            self._workers[wid] = self._build(wid)
            handles.append(base.WorkerHandle(wid))
        return handles

    def _build(self, wid):
        worker_cls, args = self._recipes[wid]
        try:
            return worker_cls(*args)
        except Exception as e:
            raise WorkerError(wid, traceback.format_exc(), type(e).__name__) from None

    def restart(self, handle):
        """A new worker from the same class and arguments (failures are not recovered here, since a worker's
        error is the driver's; this is what replaying a recorded schedule with replacements needs)."""
        close = getattr(self._workers.get(handle.worker_id), "close", None)
        if close is not None:
            close()
        self._workers[handle.worker_id] = self._build(handle.worker_id)
        return base.WorkerHandle(handle.worker_id)

    def call(self, handle, method, *args, **kwargs):
        wid = handle.worker_id
        try:
            return LocalFuture(wid, value=getattr(self._workers[wid], method)(*args, **kwargs))
        except Exception as e:
            return LocalFuture(wid, error=WorkerError(wid, traceback.format_exc(), type(e).__name__))

    def wait(self, futures, num_returns=1, timeout=None):
        futures = list(futures)
        return futures[:num_returns], futures[num_returns:]

    def get(self, futures, timeout=None):
        if isinstance(futures, base.Future):
            if futures.error is not None:
                raise futures.error
            return futures.value
        return [self.get(f) for f in futures]

    def shutdown(self):
        for w in self._workers.values():
            close = getattr(w, "close", None)
            if close:
                close()
        self._workers.clear()
