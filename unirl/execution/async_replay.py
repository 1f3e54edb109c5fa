"""Async replay (Ape-X): actors -> replay shards (stateful workers) -> learner -> priorities back to the shards.

Every actor always has a sampling task in flight. The driver consumes actor results in arrival
order through an `ArrivalSchedule` (recorded, or replayed from a list of actor ids), sends each
batch of rows with its initial priorities to a shard (round robin over consumed batches),
relaunches that actor at once (with fresh weights when its copy is `weight_sync_period` learner
steps old), and then runs the learner's due gradient steps: each pulls a prioritized minibatch
from a shard (round robin, the next request sent before the current step runs) and sends the
new priorities back. All messages go through the driver, so the backend protocol is all it needs.

Why a recorded schedule replays bit for bit on any backend: each worker runs its calls in the
order they were issued, every actor's sequence of tasks is deterministic given the weights it is
sent, and everything the driver issues (adds, samples, priority updates, which weights go where)
is a function of the results consumed so far, so the order of consumption is the only free
choice a run makes. It holds for a fixed number of actors (the schedule names actors).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from unirl.execution.schedule import ArrivalSchedule


class AsyncReplay:
    """Actors sample continuously; `consume()` takes the next actor result; `replay()` pulls a learner minibatch."""

    def __init__(self, backend, actor_cls, actor_args: list[tuple], shard_cls, shard_args: list[tuple],
                 sample_method: str = "sample_with_priorities", replay_schedule: list[int] | None = None,
                 timeout: float | None = None):
        self.backend = backend
        self.sample_method = sample_method
        self.actors = backend.spawn(actor_cls, actor_args)
        self.shards = backend.spawn(shard_cls, shard_args)
        self.schedule = ArrivalSchedule(backend, replay=replay_schedule, timeout=timeout)
        self.pending: dict[int, object] = {}
        #: Learner step whose weights each actor holds (-1: its initial weights).
        self.actor_version = [-1] * len(self.actors)
        self.batches_consumed = 0
        self.weight_syncs = 0
        self.staleness_sum = 0
        self._side_futures: list = []  # adds and priority updates: checked for errors once per iteration
        self._prefetched = None

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def launch(self, actor: int, flat_weights: np.ndarray | None, version: int) -> None:
        """Start actor's next sampling task (with new weights when given)."""
        if flat_weights is not None:
            self.actor_version[actor] = version
            self.weight_syncs += 1
        self.pending[actor] = self.backend.call(self.actors[actor], self.sample_method, flat_weights)

    def start(self, flat_weights: np.ndarray, version: int) -> None:
        for i in range(len(self.actors)):
            if i not in self.pending:
                self.launch(i, flat_weights, version)

    def consume(self, learner_version: int, weights_fn: Callable[[], np.ndarray], weight_sync_period: int):
        """(actor id, its result, staleness in learner steps): the next result in schedule order; its rows go
        to a shard and the actor is relaunched at once (weights re-sent when `weight_sync_period` steps old)."""
        actor = self.schedule.next(self.pending)
        result = self.backend.get(self.pending.pop(actor))
        staleness = learner_version - max(self.actor_version[actor], 0)
        self.staleness_sum += staleness
        stale = learner_version - self.actor_version[actor] >= weight_sync_period
        self.launch(actor, weights_fn() if stale else None, learner_version)
        return actor, result, staleness

    def add_to_shard(self, rows: dict, priorities: np.ndarray) -> None:
        shard = self.shards[self.batches_consumed % self.num_shards]
        self.batches_consumed += 1
        self._side_futures.append(self.backend.call(shard, "add", rows, priorities))

    def replay(self, step: int, n: int, beta: float, prefetch_next: bool):
        """(shard index, rows, indices, weights) of learner step `step` (shard step % num_shards)."""
        if self._prefetched is not None and self._prefetched[0] == step:
            future = self._prefetched[1]
        else:
            future = self.backend.call(self.shards[step % self.num_shards], "sample", n, beta)
        self._prefetched = None
        if prefetch_next:
            nxt = step + 1
            self._prefetched = (nxt, self.backend.call(self.shards[nxt % self.num_shards], "sample", n, beta))
        rows, idx, weights = self.backend.get(future)
        return step % self.num_shards, rows, idx, weights

    def update_priorities(self, shard: int, idx: np.ndarray, td_errors: np.ndarray) -> None:
        self._side_futures.append(self.backend.call(self.shards[shard], "update_priorities", idx, td_errors))

    def flush(self) -> None:
        """Wait for the shards' adds and priority updates (re-raising a worker's error)."""
        if self._prefetched is not None:
            self._side_futures.append(self._prefetched[1])
            self._prefetched = None
        futures, self._side_futures = self._side_futures, []
        self.backend.get(futures)

    def shard_states(self) -> list:
        self.flush()
        return self.backend.get([self.backend.call(s, "get_state") for s in self.shards])

    def set_shard_states(self, states: list) -> None:
        self.flush()
        self.backend.get([self.backend.call(s, "set_state", *st) for s, st in zip(self.shards, states)])
