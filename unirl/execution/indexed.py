"""Index-range tasks on stateful workers: broadcast, hand out chunks of a global index range, join by index.

Two patterns hand out work this way: population evaluation (ES, ARS: perturbation indices) and synchronous
self-play (AlphaZero: game indices). A task's result depends only on the run seed, its indices and what was
broadcast, never on which worker ran it, so results joined by index are the same bits on every backend and
worker count.

    tasks = IndexedTasks(backend, WorkerClass, [(spec,)] * num_workers)
    tasks.broadcast("set_weights", flat_weights)
    results = tasks.run("evaluate", start, count, sigma)   # one result per chunk, in index order

A worker that fails or hangs (unirl.execution.recovery) is replaced, sent the last broadcast again, and its
lost chunks are handed out again: the joined result is bit-identical to an unfaulted run.
"""
from __future__ import annotations

import collections

from unirl.execution.recovery import WorkerGroup, WorkerLost


class IndexedTasks:
    """The driver's side: one `worker_cls(*args)` per entry of `args_list` on `backend`; `run` hands out chunks of
    `chunk_size` indices (default: about four per worker), two in flight per worker, as workers free up."""

    def __init__(self, backend, worker_cls, args_list: list, chunk_size: int = 0):
        self.backend = backend
        self.chunk_size = int(chunk_size)
        self.group = WorkerGroup(backend, worker_cls, args_list, snapshot=False)
        self._broadcast = None

    @property
    def workers(self):
        return self.group.handles

    def broadcast(self, method: str, *args) -> None:
        """Call `method(*args)` on every worker (and on any replacement before its first task)."""
        self._broadcast = (method, args)
        self.group.call_all(method, *args)

    def chunks(self, start: int, count: int) -> list[tuple[int, int]]:
        size = self.chunk_size or max(1, -(-count // (4 * len(self.workers))))
        return [(a, min(a + size, start + count)) for a in range(start, start + count, size)]

    def run(self, method: str, start: int, count: int, *args) -> list:
        """`method(chunk_start, chunk_stop, *args)` over [start, start + count) in chunks; the results in index order."""
        chunks = self.chunks(start, count)
        results: list = [None] * len(chunks)
        todo = collections.deque(range(len(chunks)))
        queues: dict[int, collections.deque] = {i: collections.deque() for i in range(len(self.workers))}

        def submit(i: int) -> None:
            if todo:
                c = todo.popleft()
                queues[i].append((self.group.submit(i, method, chunks[c][0], chunks[c][1], *args), c))

        for _ in range(2):
            for i in range(len(self.workers)):
                submit(i)
        while any(queues.values()):
            try:
                i, value = self.group.first_result({i: q[0][0] for i, q in queues.items() if q})
            except WorkerLost as lost:
                i = lost.index
                todo.extendleft(reversed([c for _, c in queues[i]]))
                self.group.recovery.num_calls_redone += len(queues[i])
                queues[i].clear()
                self.group.replace(i, lost.error)
                if self._broadcast is not None:
                    method_b, args_b = self._broadcast
                    self.backend.get(self.backend.call(self.workers[i], method_b, *args_b))
                submit(i)
                submit(i)
                continue
            _, c = queues[i].popleft()
            results[c] = value
            submit(i)
        return results
