"""Async replay (Ape-X): actors -> replay shards (stateful workers) -> learner -> priorities back to the shards.

Every actor always has a sampling task in flight. The driver consumes actor results in arrival
order through an `ArrivalSchedule` (recorded, or replayed from a list of actor ids), sends each
batch of rows with its initial priorities to a shard (round robin over consumed batches),
relaunches that actor at once (with fresh weights when its copy is `weight_sync_period` learner
steps old), and then runs the learner's due gradient steps in turns: a turn pulls up to
`replay_batches_per_request` prioritized minibatches from a shard in one request (round robin over
turns, the next turn's request sent before the current one learns), takes a gradient step on each
and sends their new priorities back in one message. On a backend whose messages cost ~1 ms of CPU
each side (Ray), fewer, larger messages are what leave the cores to the actors. All messages go
through the driver, so the backend protocol is all it needs.

Why a recorded schedule replays bit for bit on any backend: each worker runs its calls in the
order they were issued, every actor's sequence of tasks is deterministic given the weights it is
sent, and everything the driver issues (adds, samples, priority updates, which weights go where)
is a function of the results consumed so far, so the order of consumption is the only free
choice a run makes. It holds for a fixed number of actors (the schedule names actors).

Failures (unirl.execution.recovery): a failed actor is replaced like any asynchronous worker
(its in-flight batch lost, the replacement reseeded and sent the current weights, the
replacement recorded in the schedule, so the run stays replayable). A failed replay shard loses
its rows: it is replaced by an empty shard and counted (`shard_restarts`, and in
num_worker_restarts); until the round robin of adds reaches it again the learner samples the next
shard that holds rows, and priority updates for rows sampled from the lost shard are dropped. The
moment a shard's loss is noticed depends on timing, so a run is replayable only up to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from unirl import sample_batch as sb
from unirl import seeding
from unirl.errors import UnirlError
from unirl.execution.recovery import WorkerGroup, WorkerLost
from unirl.execution.schedule import ArrivalSchedule
from unirl.replay import PrioritizedReplayBuffer
from unirl.rollout import RolloutWorker
from unirl.sample_batch import SampleBatch

#: Seed stream of the replay shards' sampling generators (entropy tag; see unirl.seeding).
REPLAY_SHARD_STREAM = 1011


@dataclass
class ActorParts:
    """What a replay actor does besides sampling (plain data: module-level functions travel by reference).

    `exploration(config, spec) -> dict`: the exploration settings of this actor's envs, fixed for the run (keyed by
    the global env indices in `spec`, so a split of envs over actors changes nothing); `rows(batch, config)`: replay
    rows from a sampled batch (n-step transitions); `priorities(policy, rows, config)`: their initial priorities,
    computed with the actor's own copy of the network. A recurrent module's batch comes with each env's state
    before every step (column unirl.recurrent.STATES) and the outputs it acted on (BEHAVIOUR_INPUTS: Q-values)."""

    exploration: Callable
    rows: Callable
    priorities: Callable


class ReplayActor(RolloutWorker):
    """A rollout worker that returns replay rows with initial priorities (and a summary for the counters)."""

    def __init__(self, spec, config, parts: ActorParts):
        super().__init__(spec)
        self.config, self.parts = config, parts
        self.explore = parts.exploration(config, spec)

    @staticmethod
    def preload_modules(spec, *rest) -> list[str]:
        return RolloutWorker.preload_modules(spec)

    def sample_with_priorities(self, flat_weights=None):
        batch = self.sample(flat_weights, **self.explore)
        if getattr(self.policy.module, "recurrent", False):
            # rows cut sequences anywhere, each with its stored state, and their priorities need the outputs acted on
            from unirl.recurrent import STATES, step_states

            batch[STATES], batch[sb.BEHAVIOUR_INPUTS] = step_states(self.policy, batch)
        rows = self.parts.rows(batch, self.config)
        priorities = self.parts.priorities(self.policy, rows, self.config)
        summary = SampleBatch({k: batch[k] for k in (sb.REWARDS, sb.EP_KEYS, sb.EP_RETURNS, sb.EP_LENGTHS)})
        return summary, rows, priorities


class ReplayShard:
    """A prioritized replay buffer as a stateful worker, sampling with its own seeded generator."""

    def __init__(self, shard_index: int, seed: int, capacity: int, alpha: float, eps: float):
        self.buffer = PrioritizedReplayBuffer(capacity, alpha, eps)
        self.rng = np.random.Generator(np.random.PCG64(seeding.seed_sequence(seed, REPLAY_SHARD_STREAM, shard_index)))

    def add(self, rows, priorities) -> int:
        self.buffer.add(rows, priorities)
        return len(self.buffer)

    def sample(self, n: int, beta: float, count: int) -> list:
        """`count` minibatches of n rows, [(rows, indices, importance weights)], drawn one after another."""
        return [self.buffer.sample(n, self.rng, beta) for _ in range(count)]

    def update_priorities(self, updates) -> None:
        """Apply [(indices, td_errors)] in order."""
        for idx, td_errors in updates:
            self.buffer.update_priorities(idx, td_errors)

    def get_state(self):
        arrays, meta = self.buffer.get_state()
        meta["rng"] = self.rng.bit_generator.state
        return arrays, meta

    def set_state(self, arrays, meta) -> None:
        self.buffer.set_state(arrays, meta)
        self.rng.bit_generator.state = meta["rng"]


class AsyncReplay:
    """Actors sample continuously; `consume()` takes the next actor result; `replay()` pulls a learner minibatch."""

    def __init__(self, backend, actor_cls, actor_args: list[tuple], shard_cls, shard_args: list[tuple],
                 sample_method: str = "sample_with_priorities", replay_schedule: list[int] | None = None,
                 timeout: float | None = None):
        self.backend = backend
        self.sample_method = sample_method
        self.actor_group = WorkerGroup(backend, actor_cls, actor_args, snapshot=False, reseed=True)
        self.shard_group = WorkerGroup(backend, shard_cls, shard_args, snapshot=False, label="replay shard")
        self.schedule = ArrivalSchedule(backend, replay=replay_schedule, timeout=timeout)
        self.pending: dict[int, object] = {}
        #: Learner step whose weights each actor holds (-1: its initial weights).
        self.actor_version = [-1] * len(self.actors)
        self.batches_consumed = 0
        self.weight_syncs = 0
        self.staleness_sum = 0
        self._side_futures: list = []  # (shard, its restart count, future): checked for errors once per iteration
        self._prefetched = None
        self._filled = [0] * len(self.shards)  # each shard's restart count at its last add (< now: empty)
        self._sampled = None  # (shard, restart count) of the last minibatch: where its priorities go

    @property
    def actors(self):
        return self.actor_group.handles

    @property
    def shards(self):
        return self.shard_group.handles

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def shard_restarts(self) -> int:
        return sum(self.shard_group.restarts)

    def launch(self, actor: int, flat_weights: np.ndarray | None, version: int) -> None:
        """Start actor's next sampling task (with new weights when given)."""
        if flat_weights is not None:
            self.actor_version[actor] = version
            self.weight_syncs += 1
        self.pending[actor] = self.actor_group.submit(actor, self.sample_method, flat_weights)

    def start(self, flat_weights: np.ndarray, version: int) -> None:
        for i in range(len(self.actors)):
            if i not in self.pending:
                self.launch(i, flat_weights, version)

    def consume(self, learner_version: int, weights_fn: Callable[[], np.ndarray], weight_sync_period: int):
        """(actor id, its result, staleness in learner steps): the next result in schedule order; its rows go
        to a shard and the actor is relaunched at once (weights re-sent when `weight_sync_period` steps old)."""
        actor, result = self.actor_group.next_result(self.schedule, lambda: dict(self.pending),
                                                     lambda a: self._relaunch(a, learner_version, weights_fn))
        del self.pending[actor]
        staleness = learner_version - max(self.actor_version[actor], 0)
        self.staleness_sum += staleness
        stale = learner_version - self.actor_version[actor] >= weight_sync_period
        self.launch(actor, weights_fn() if stale else None, learner_version)
        return actor, result, staleness

    def _relaunch(self, actor: int, learner_version: int, weights_fn) -> None:
        """A replaced actor: its lost batch forgotten, a first task with the current weights."""
        self.pending.pop(actor, None)
        self.launch(actor, weights_fn(), learner_version)

    def replay_due_restarts(self, learner_version: int, weights_fn: Callable[[], np.ndarray]) -> None:
        """Replaying a schedule: replace the actors the recorded run replaced at this point (the driver
        calls it before reading the schedule's next entry itself, e.g. to tell a learner turn)."""
        while (actor := self.schedule.restart_due()) is not None:
            self.actor_group.replace(actor, None)
            self.schedule.record_restart(actor)
            self._relaunch(actor, learner_version, weights_fn)

    def add_to_shard(self, rows: dict, priorities: np.ndarray) -> None:
        j = self.batches_consumed % self.num_shards
        self.batches_consumed += 1
        self._filled[j] = self.shard_group.restarts[j]
        self._side_futures.append((j, self._filled[j], self.shard_group.submit(j, "add", rows, priorities)))

    def _shard_for(self, step: int) -> int:
        """Shard step % num_shards, or after it the first that holds rows (a replaced shard is empty until its next add)."""
        n = self.num_shards
        for k in range(n):
            j = (step + k) % n
            if self._filled[j] == self.shard_group.restarts[j]:
                return j
        raise UnirlError("every replay shard was lost and none has received rows since; nothing to learn from.")

    def _shard_lost(self, lost: WorkerLost) -> None:
        self.shard_group.replace(lost.index, lost.error)

    def replay(self, turn: int, n: int, beta: float, count: int, prefetch: int):
        """(shard index, [(rows, indices, weights)] * count): `count` minibatches of n rows for learner turn
        `turn`, pulled from shard turn % num_shards in one request; with prefetch > 0 the next turn's request
        (prefetch minibatches) is sent before this one's rows are used."""
        while True:
            j = self._shard_for(turn)
            key = (turn, j, self.shard_group.restarts[j], count)
            if self._prefetched is not None and self._prefetched[0] == key:
                future = self._prefetched[1]
            else:
                if self._prefetched is not None:  # asked for a turn of another size: its answer is not used
                    self._retire_prefetched()
                future = self.shard_group.submit(j, "sample", n, beta, count)
            self._prefetched = None
            if prefetch > 0:
                nj = self._shard_for(turn + 1)
                self._prefetched = ((turn + 1, nj, self.shard_group.restarts[nj], prefetch),
                                    self.shard_group.submit(nj, "sample", n, beta, prefetch))
            try:
                batches = self.shard_group.result(j, future)
            except WorkerLost as lost:
                self._shard_lost(lost)
                continue
            self._sampled = (j, self.shard_group.restarts[j])
            return j, batches

    def update_priorities(self, shard: int, updates: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Send a turn's new priorities, [(indices, td_errors)] in learning order, to its shard in one message."""
        if self._sampled != (shard, self.shard_group.restarts[shard]):
            return  # sampled from a shard lost since: its rows are gone
        self._side_futures.append((shard, self._sampled[1],
                                   self.shard_group.submit(shard, "update_priorities", updates)))

    def _retire_prefetched(self) -> None:
        (_, j, restarts, _), future = self._prefetched
        self._side_futures.append((j, restarts, future))
        self._prefetched = None

    def flush(self) -> None:
        """Wait for the shards' adds and priority updates (replacing a shard that failed)."""
        if self._prefetched is not None:
            self._retire_prefetched()
        futures, self._side_futures = self._side_futures, []
        for j, restarts, future in futures:
            if restarts != self.shard_group.restarts[j]:
                continue  # a call to a shard replaced since
            try:
                self.shard_group.result(j, future)
            except WorkerLost as lost:
                self._shard_lost(lost)

    def shard_states(self) -> list:
        self.flush()
        return self.shard_group.call_all("get_state")

    def set_shard_states(self, states: list) -> None:
        self.flush()
        self.shard_group.call_each("set_state", [(tuple(st), {}) for st in states])
