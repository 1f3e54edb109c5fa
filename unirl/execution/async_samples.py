"""Async samples (IMPALA, Espeholt et al. 2018): actors sample with possibly stale weights; the learner consumes fragments as they arrive.

Each actor is a rollout worker that records its behaviour distribution inputs
(WorkerSpec(record_dist_inputs=True)), so the learner can correct for the lag between the
weights a fragment was sampled with and the weights it is learned with (V-trace). Every actor
keeps up to `max_requests_in_flight_per_worker` sample requests queued; the learner consumes
fragments one at a time and, once it has learned on them, sends fresh weights to the actors that
returned (`request`). Each result carries the weights version it was sampled with, so the
algorithm can record the policy lag.

Results are consumed through an ArrivalSchedule: free-running, the first ready (recorded);
replaying, the recorded worker ids in order, which makes the run bit-identical on any backend.

    pattern = AsyncSamples(backend, specs, max_requests_in_flight_per_worker=2)
    pattern.fill(weights, version)            # top every actor up to the limit
    result = pattern.next()                   # AsyncResult(worker_id, SampleBatch, version)
    pattern.request(result.worker_id, new_weights, new_version)
"""
from __future__ import annotations

from collections import deque

import numpy as np

from unirl.errors import UnirlError
from unirl.execution.async_gradients import AsyncResult
from unirl.execution.recovery import WorkerGroup
from unirl.execution.schedule import ArrivalSchedule
from unirl.rollout import RolloutWorker, WorkerSpec


class AsyncSamples:
    """Rollout actors with a bounded queue of sample requests each; fragments consumed by the schedule."""

    def __init__(self, backend, specs: list[WorkerSpec], max_requests_in_flight_per_worker: int = 2,
                 replay: list[int] | None = None, timeout: float | None = None, worker_cls=RolloutWorker):
        if max_requests_in_flight_per_worker < 1:
            raise UnirlError("max_requests_in_flight_per_worker must be at least 1, "
                             f"got {max_requests_in_flight_per_worker}.")
        self.backend = backend
        self.max_in_flight = int(max_requests_in_flight_per_worker)
        # Failed actors are replaced (unirl.execution.recovery): queued fragments lost, fresh weights sent.
        self.group = WorkerGroup(backend, worker_cls, [(s,) for s in specs], snapshot=False, reseed=True)
        self.schedule = ArrivalSchedule(backend, replay=replay, timeout=timeout)
        self.in_flight: dict[int, deque] = {i: deque() for i in range(len(specs))}
        self._submitted = 0  # requests made so far: orders the pending results
        self._latest = None  # the arguments of the last request: what a replacement actor is sent
        #: replacement_args(worker_id) -> (weights, version, keyword arguments): what each request to a replacement
        #: actor sends (its own exploration settings; self-play: the next games); set by the pattern that drives
        #: this; None: the last request's arguments.
        self.replacement_args = None

    @property
    def workers(self):
        return self.group.handles

    def request(self, worker_id: int, flat_weights: np.ndarray, version: int, **explore) -> bool:
        """Queue one fragment on this actor with these weights, unless its queue is full; True if queued."""
        self._latest = (flat_weights, version, explore)
        q = self.in_flight[worker_id]
        if len(q) >= self.max_in_flight:
            return False
        q.append((self.group.submit(worker_id, "sample", flat_weights, **explore), version, self._submitted))
        self._submitted += 1
        return True

    def fill(self, flat_weights: np.ndarray, version: int, **explore) -> None:
        """Top every actor's queue up to max_requests_in_flight_per_worker (in worker order)."""
        for wid in self.in_flight:
            while self.request(wid, flat_weights, version, **explore):
                pass

    def next(self) -> AsyncResult:
        """The next fragment to consume, by the schedule (each actor's fragments in the order requested)."""
        wid, value = self.group.next_result(self.schedule, self._heads, self._replaced)
        _, version, _ = self.in_flight[wid].popleft()
        return AsyncResult(wid, value, version)

    def _heads(self) -> dict:
        # In submission order of each worker's oldest request: the longest waiting first among
        # those ready (on the local backend, where all are ready, the workers take turns).
        heads = sorted((q[0][2], wid) for wid, q in self.in_flight.items() if q)
        return {wid: self.in_flight[wid][0][0] for _, wid in heads}

    def _replaced(self, wid: int) -> None:
        self.in_flight[wid].clear()
        if self._latest is None:
            return
        while len(self.in_flight[wid]) < self.max_in_flight:  # the arguments asked anew for each request
            weights, version, explore = self._latest if self.replacement_args is None else self.replacement_args(wid)
            self.request(wid, weights, version, **explore)
