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

    def spawn(self, worker_cls, args_list):
        handles = []
        for args in args_list:
            wid = len(self._workers)
            try:
                self._workers[wid] = worker_cls(*args)
            except Exception as e:
                raise WorkerError(wid, traceback.format_exc(), type(e).__name__) from None
            handles.append(base.WorkerHandle(wid))
        return handles

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
