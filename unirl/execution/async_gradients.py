"""Async gradients (A3C, Mnih et al. 2016): workers sample and compute gradients; the driver applies each as it arrives.

Each worker holds a learning copy of the policy. A task sends it weights; it samples one
fragment with them, computes the gradient of the algorithm's loss on that fragment locally and
returns (gradient, stats, the fragment's counters). The driver applies each gradient as it is
consumed and sends the new weights back to that worker only, so the others keep computing on
older weights (the policy lag, recorded with every result).

Results are consumed through an ArrivalSchedule: free-running, the driver takes whichever
worker finished first and records it; replaying a recorded list of worker ids makes any backend
consume the same results in the same order, and as every worker's own task sequence is
deterministic given the weights it is sent, the run is bit-identical to the recorded one.

    learner = WorkerLearner(loss, param_sets, postprocess, config)   # unirl.execution.loops
    pattern = AsyncGradients(backend, specs, learner, replay=None)
    pattern.submit(wid, (sets, versions, hp, explore, False), version)  # for every worker, then in a loop:
    result = pattern.next()                         # AsyncResult(worker_id, value, version, request)

The driver loop that uses it (apply, record, resubmit) is unirl.execution.loops.AsyncGradients.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from unirl import sample_batch as sb
from unirl.execution.recovery import WorkerGroup
from unirl.execution.schedule import ArrivalSchedule
from unirl.rollout import RolloutWorker, WorkerSpec
from unirl.sample_batch import SampleBatch

#: The columns of a fragment a gradient worker sends back with its gradient: enough to count
#: the steps and episodes (Algorithm.record_batch), nothing the size of the observations.
COUNTER_COLUMNS = (sb.REWARDS, sb.EP_KEYS, sb.EP_RETURNS, sb.EP_LENGTHS)


@dataclass
class AsyncResult:
    """One consumed result: the worker it came from, its value, the weights version it was computed with, and
    the request's number (requests are numbered in the order they were made)."""

    worker_id: int
    value: object
    version: int
    request: int = -1


class GradientWorker:
    """A rollout worker whose policy can learn: compute_gradients(sets, versions, hp, explore) takes the driver's
    parameter sets, samples one fragment and returns (flat gradient, stats, counters, the versions used, rows or
    None) computed by the learner (unirl.execution.loops.WorkerLearner)."""

    def __init__(self, spec: WorkerSpec, learner):
        self.learner = learner
        self.rollout = RolloutWorker(spec)
        # The learning copy acts too: one policy, built with the algorithm's loss and parameter sets.
        self.policy = learner.build_policy(spec.policy)
        self.rollout.policy = self.policy

    @staticmethod
    def preload_modules(spec: WorkerSpec, learner) -> list[str]:
        return RolloutWorker.preload_modules(spec)

    def worker_id(self) -> int:
        return self.rollout.spec.worker_index

    def reseed(self, restart_count: int) -> None:
        self.rollout.reseed(restart_count)

    def set_recorder(self, recorder) -> None:
        """Forward this worker's learning calls to `recorder` (Policy.recorder; in-process backends only)."""
        self.policy.recorder = recorder

    def compute_gradients(self, sets: dict, versions: dict, hp: dict, explore: dict | None = None,
                          return_rows: bool = False):
        """Take the sets, sample a fragment with `params`, and return (gradient, stats, counters, versions used,
        the rows learned on if return_rows else None)."""
        self.policy.set_parameter_sets(sets, versions)
        batch = self.rollout.sample(None, **(explore or {}))
        used = self.policy.used_versions()
        rows = self.learner.rows(self.policy, batch)
        grad, stats = self.policy.compute_gradients(rows, hp)
        stats = {k: v for k, v in stats.items() if np.ndim(v) == 0}  # per-row stats (TD errors) stay here
        counters = SampleBatch({k: batch[k] for k in COUNTER_COLUMNS})
        return grad, stats, counters, used, (rows if return_rows else None)

    def close(self) -> None:
        self.rollout.close()


class AsyncGradients:
    """Gradient workers driven asynchronously; results consumed in arrival order (recorded) or a replayed order."""

    def __init__(self, backend, specs: list[WorkerSpec], learner, replay: list[int] | None = None,
                 timeout: float | None = None, worker_cls=GradientWorker):
        self.backend = backend
        # Failed workers are replaced (unirl.execution.recovery): in-flight gradients lost, fresh weights sent.
        self.group = WorkerGroup(backend, worker_cls, [(s, learner) for s in specs], snapshot=False, reseed=True)
        self.schedule = ArrivalSchedule(backend, replay=replay, timeout=timeout)
        self.in_flight: dict[int, deque] = {i: deque() for i in range(len(specs))}
        self._submitted = 0  # requests made so far: orders the pending results
        #: replacement_args(worker_id) -> (args, version): the request a replacement worker is sent (its own
        #: exploration settings and the current parameter sets); set by the pattern that drives this.
        self.replacement_args = None

    @property
    def workers(self):
        return self.group.handles

    @property
    def idle_workers(self) -> list[int]:
        return [wid for wid, q in self.in_flight.items() if not q]

    def submit(self, worker_id: int, args: tuple, version: int) -> None:
        """Ask one worker for a gradient: compute_gradients(*args), computed with weights version `version`."""
        future = self.group.submit(worker_id, "compute_gradients", *args)
        self.in_flight[worker_id].append((future, version, self._submitted))
        self._submitted += 1

    def next(self) -> AsyncResult:
        """The next result to consume, by the schedule: (worker id, compute_gradients' value, version, request)."""
        wid, value = self.group.next_result(self.schedule, self._heads, self._replaced)
        _, version, request = self.in_flight[wid].popleft()
        return AsyncResult(wid, value, version, request)

    def _heads(self) -> dict:
        # In submission order of each worker's oldest request: the longest waiting first among
        # those ready (on the local backend, where all are ready, the workers take turns).
        heads = sorted((q[0][2], wid) for wid, q in self.in_flight.items() if q)
        return {wid: self.in_flight[wid][0][0] for _, wid in heads}

    def _replaced(self, wid: int) -> None:
        self.in_flight[wid].clear()
        if self.replacement_args is not None:
            self.submit(wid, *self.replacement_args(wid))
