"""Worker recovery: replace a worker that died, raised, or hung, and redo what it lost, so the iteration completes.

Any execution pattern can use it through `WorkerGroup`, which wraps the workers it spawns:

    group = WorkerGroup(backend, RolloutWorker, [(spec,) for spec in specs])
    batches = group.call_all("sample", weights)      # in worker order, with recovery

How a failure is handled (when `recovery.enabled`, the default on the multiprocessing and Ray
backends; `recreate_failed_workers` in the config):

- a worker whose process ends (`WorkerDiedError`), whose task raises (`WorkerError`), or that
  does not answer within `worker_timeout_s` is killed if still running and replaced by
  `backend.restart(handle)`: a new worker built from the same spec (the same global env indices);
- the replacement is given the state the old worker had at the start of the failed call
  (`snapshot=True`: after every successful call the group keeps each worker's `get_state()`,
  fetched in the same pipeline, so it costs no extra round trip; a worker that never completed a
  call is in its initial state, which a fresh worker from the same spec reproduces), and the
  call is redone with the same arguments: the redone sampling is the same sampling, and a
  synchronous algorithm's results are bit-identical to an unfaulted run;
- every replacement is logged (worker id, where it ran, the cause) and counted
  (`num_worker_restarts` in the result rows); more than `max_worker_restarts` within an hour
  raise `TooManyWorkerFailures`, which ends the run (the CLI then leaves a checkpoint).

Without a snapshot (a worker class with no get_state) the replacement starts from its spec's
initial state: the run completes but is no longer bit-identical to an unfaulted one.

Asynchronous patterns (A3C, IMPALA, Ape-X actors and shards, ES/ARS chunks) use the same group
without snapshots: `submit` one call at a time, and take results with `first_result` (whichever
worker answers first), `result` (one given future) or `next_result` (by an ArrivalSchedule). A
failed worker surfaces there as `WorkerLost`; `next_result` handles it itself: the worker is
replaced, its in-flight results are lost, the schedule records the replacement (entry
`-1 - worker`, see schedule.py) and the pattern's `on_replaced(worker)` gives the new worker
fresh weights and work. With `reseed=True` the replacement calls `worker.reseed(k)` (k: how many
times this worker has been replaced), so its envs restart from seeds of (run seed, env index, k)
rather than repeating the first worker's episodes. Replaying a schedule replays its
replacements too (the live worker is replaced at the same point), so a faulted asynchronous run
stays replayable bit for bit.
"""
from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

from unirl.errors import UnirlError, WorkerDiedError, WorkerError

logger = logging.getLogger("unirl.recovery")

WINDOW_S = 3600.0
HANG_WARNING_S = 60.0


class TooManyWorkerFailures(UnirlError):
    """Workers failed more often than `max_worker_restarts` allows; the run stops."""


class WorkerLost(Exception):
    """Inside a pattern: worker `index` of a WorkerGroup failed with `error` and recovery is on, so the
    pattern is to replace it (`WorkerGroup.replace`) and redo or drop what it had in flight."""

    def __init__(self, index: int, error: Exception):
        super().__init__(f"worker index {index} failed: {error}")
        self.index = index
        self.error = error


@dataclass
class Recovery:
    """Recovery settings and counters, shared by every pattern on one backend (`backend.recovery`)."""

    enabled: bool = False
    worker_timeout_s: float | None = None
    max_worker_restarts: int = 10
    num_worker_restarts: int = 0
    num_calls_redone: int = 0
    time_lost_s: float = 0.0
    restart_times: collections.deque = field(default_factory=collections.deque)

    @classmethod
    def from_config(cls, config, backend) -> "Recovery":
        wanted = getattr(config, "recreate_failed_workers", None)
        can = bool(getattr(backend, "can_restart_workers", False))
        if wanted and not can:
            logger.warning("unirl: the %s backend cannot replace a failed worker; recreate_failed_workers is off "
                           "(a failed worker ends the run; resume it from its last checkpoint with --resume)",
                           backend.name)
        enabled = can if wanted is None else (bool(wanted) and can)
        timeout = getattr(config, "worker_timeout_s", None) or None
        return cls(enabled=enabled, worker_timeout_s=timeout,
                   max_worker_restarts=int(getattr(config, "max_worker_restarts", 10)))

    def count_restart(self, cause: str) -> None:
        now = time.monotonic()
        self.restart_times.append(now)
        while self.restart_times and now - self.restart_times[0] > WINDOW_S:
            self.restart_times.popleft()
        if len(self.restart_times) > self.max_worker_restarts:
            raise TooManyWorkerFailures(
                f"workers failed {len(self.restart_times)} times within an hour (max_worker_restarts "
                f"{self.max_worker_restarts}); the last: {cause}")
        self.num_worker_restarts += 1


def recovery_of(backend) -> Recovery:
    rec = getattr(backend, "recovery", None)
    if rec is None:
        rec = Recovery()
        try:
            backend.recovery = rec
        except AttributeError:
            pass
    return rec


def _cause(error: Exception) -> str:
    if isinstance(error, WorkerError):
        return f"its task raised {error.remote_traceback.strip().splitlines()[-1] if error.remote_traceback.strip() else error.exc_type}"
    if isinstance(error, WorkerDiedError):
        return error.detail or "it died"
    return str(error)


class WorkerGroup:
    """A pattern's workers with recovery: `call_all` runs one method on every worker and returns the
    values in worker order, replacing failed workers and redoing their calls (see the module docstring)."""

    def __init__(self, backend, worker_cls, args_list, snapshot: bool | None = None, reseed: bool = False,
                 label: str = "worker"):
        self.backend = backend
        self.recovery = recovery_of(backend)
        self.handles = backend.spawn(worker_cls, args_list)
        has_state = callable(getattr(worker_cls, "get_state", None)) and callable(getattr(worker_cls, "set_state", None))
        self.snapshot = (self.recovery.enabled if snapshot is None else snapshot) and has_state
        self.reseed = reseed and callable(getattr(worker_cls, "reseed", None))
        self.label = label
        n = len(self.handles)
        #: Each worker's state after its last successful call (None: still its initial state).
        self.snapshots: list = [None] * n
        #: How many times each worker has been replaced (the `k` of `reseed(k)`).
        self.restarts = [0] * n
        # Asynchronous use: each worker's submitted calls not yet seen finished, and when it last showed
        # progress (a call of an idle worker submitted, or one seen finished): what worker_timeout_s is
        # measured against, so a driver busy elsewhere never makes a worker look hung.
        self._outstanding = [collections.deque() for _ in range(n)]
        self._progress = [0.0] * n

    def __len__(self):
        return len(self.handles)

    # -- calls ---------------------------------------------------------------------------------
    def call_all(self, method: str, *args, **kwargs) -> list:
        """worker.method(*args, **kwargs) on every worker; values in worker order."""
        return self.call_each(method, [(args, kwargs)] * len(self.handles))

    def call_each(self, method: str, arglist: list) -> list:
        """worker i runs method(*arglist[i][0], **arglist[i][1]); values in worker order."""
        n = len(self.handles)
        pending = {i: self._submit(i, method, *arglist[i]) for i in range(n)}
        values = [None] * n
        while pending:
            failed = self._collect(pending, values)
            if not failed:
                break
            for i, error in failed.items():
                self.replace(i, error)
                pending[i] = self._submit(i, method, *arglist[i])
                self.recovery.num_calls_redone += 1
        return values

    def _submit(self, i, method, args, kwargs):
        h = self.handles[i]
        main = self.backend.call(h, method, *args, **kwargs)
        snap = self.backend.call(h, "get_state") if self.snapshot else None
        return main, snap

    def _collect(self, pending: dict, values: list) -> dict:
        """Wait for the pending calls; store the values of those that succeed and drop them from `pending`;
        return {i: error} of the workers that failed (died, raised, or passed worker_timeout_s)."""
        rec = self.recovery
        waited = 0.0
        while pending:
            futures = [f for pair in pending.values() for f in pair if f is not None]
            limit = HANG_WARNING_S if rec.worker_timeout_s is None else min(HANG_WARNING_S, rec.worker_timeout_s - waited)
            t0 = time.monotonic()
            _, not_ready = self.backend.wait(futures, len(futures), timeout=max(limit, 0.0))
            if not_ready and not any(self._failed_early(f) for f in futures):
                waited += time.monotonic() - t0
                if rec.worker_timeout_s is None or waited < rec.worker_timeout_s - 1e-3:
                    slow = sorted({f.worker_id for f in not_ready})
                    logger.warning("unirl: worker(s) %s have not answered for %.0f s%s", slow, waited,
                                   "" if rec.worker_timeout_s else " (set worker_timeout_s to replace hung workers)")
                    continue
            late = {id(f) for f in not_ready}
            failed = {}
            for i, (main, snap) in list(pending.items()):
                pair = [f for f in (main, snap) if f is not None]
                error = None
                for f in pair:
                    if id(f) in late:
                        continue
                    try:
                        self.backend.get(f)
                    except (WorkerError, WorkerDiedError) as e:
                        error = e
                        break
                if error is None and any(id(f) in late for f in pair):
                    if not_ready and not any(self._failed_early(f) for f in futures):
                        error = WorkerDiedError(self.handles[i].worker_id, "it did not answer within "
                                                f"worker_timeout_s={rec.worker_timeout_s:g} s (hung)")
                    else:
                        continue  # still running; another worker failed: keep waiting for this one
                if error is not None:
                    failed[i] = error
                    del pending[i]
                    continue
                values[i] = self.backend.get(main)
                if snap is not None:
                    self.snapshots[i] = self.backend.get(snap)
                del pending[i]
            if failed:
                if not rec.enabled:
                    raise next(iter(failed.values()))
                return failed
        return {}

    def _failed_early(self, f) -> bool:
        """Whether a finished future holds an error (without raising it)."""
        if hasattr(f, "done") and hasattr(f, "ok"):
            return bool(f.done and not f.ok)
        return False

    def describe(self, i: int) -> str:
        """"worker 3 (pid 1234 on host-a)": the worker's id and where it runs, for messages."""
        h = self.handles[i]
        where = ""
        describe = getattr(self.backend, "describe_worker", None)
        if describe is not None:
            try:
                where = describe(h)
            except Exception:
                where = ""
        name = f"worker {h.worker_id}" if self.label == "worker" else f"{self.label} {i} (worker {h.worker_id})"
        return f"{name}{' (' + where + ')' if where else ''}"

    def _replace(self, i: int, error: Exception) -> None:
        self.replace(i, error)

    def replace(self, i: int, error: Exception | None) -> None:
        """Replace worker i (killing it if it still runs) by a new one from the same spec, restored to its
        snapshot or reseeded; `error` None: replaying a recorded replacement (not counted as a failure)."""
        t0 = time.monotonic()
        who = self.describe(i)
        if error is not None:
            cause = _cause(error)
            self.recovery.count_restart(f"{who}: {cause}")
            logger.warning("unirl: %s failed: %s; replacing it (restart %d)", who, cause,
                           self.recovery.num_worker_restarts)
        else:
            logger.info("unirl: replaying the recorded schedule: replacing %s where the recorded run did", who)
        self.handles[i] = self.backend.restart(self.handles[i])
        self.restarts[i] += 1
        self._outstanding[i].clear()
        if self.snapshots[i] is not None:
            self.backend.get(self.backend.call(self.handles[i], "set_state", self.snapshots[i]))
        elif self.reseed:
            self.backend.get(self.backend.call(self.handles[i], "reseed", self.restarts[i]))
        if error is not None:
            self.recovery.time_lost_s += time.monotonic() - t0

    # -- asynchronous use ---------------------------------------------------------------------
    def submit(self, i: int, method: str, *args, **kwargs):
        """worker i runs method(*args, **kwargs); the future is taken back with first_result/result/next_result."""
        future = self.backend.call(self.handles[i], method, *args, **kwargs)
        if self.recovery.worker_timeout_s is not None:  # tracked only to tell a hung worker
            if not self._outstanding[i]:
                self._progress[i] = time.monotonic()
            self._outstanding[i].append(future)
        return future

    def _silent_for(self, i: int, now: float) -> float:
        """Seconds worker i has had calls outstanding without finishing any (0 if it has none)."""
        q = self._outstanding[i]
        if q:
            ready, _ = self.backend.wait(list(q), len(q), timeout=0)
            if ready:
                # Calls on one worker run in order: everything up to the last finished one is done.
                last = max(k for k, f in enumerate(q) for r in ready if r is f)
                for _ in range(last + 1):
                    q.popleft()
                self._progress[i] = now
        return now - self._progress[i] if q else 0.0

    def _lost(self, i: int, error: Exception):
        if not self.recovery.enabled:
            raise error
        raise WorkerLost(i, error)

    def _hung(self, i: int) -> Exception:
        return WorkerDiedError(self.handles[i].worker_id, "it did not answer within "
                               f"worker_timeout_s={self.recovery.worker_timeout_s:g} s (hung)")

    def first_result(self, heads: dict):
        """(i, value) of the first of `heads` (worker index -> that worker's oldest pending future) to
        succeed, in the order given among those ready; a worker that failed or passed worker_timeout_s on
        its oldest call raises WorkerLost (recovery on) or its error (off)."""
        timeout = self.recovery.worker_timeout_s
        by_id = {id(f): i for i, f in heads.items()}
        quiet_since = time.monotonic()
        while True:
            now = time.monotonic()
            limit = HANG_WARNING_S
            if timeout is not None:
                limit = min(limit, max(0.0, timeout - max(self._silent_for(i, now) for i in heads)))
            ready, _ = self.backend.wait(list(heads.values()), 1, timeout=limit)
            if ready:
                f = ready[0]
                i = by_id[id(f)]
                try:
                    value = self.backend.get(f)
                except (WorkerError, WorkerDiedError) as e:
                    self._lost(i, e)
                return i, value
            now = time.monotonic()
            if timeout is not None:
                hung = [i for i in heads if self._silent_for(i, now) >= timeout - 1e-3]
                if hung:
                    self._lost(hung[0], self._hung(hung[0]))
            elif now - quiet_since >= HANG_WARNING_S - 1e-3:
                logger.warning("unirl: no %s has returned a result for %.0f s (%s); set worker_timeout_s to "
                               "replace hung workers", self.label, now - quiet_since,
                               ", ".join(self.describe(i) for i in heads))
                quiet_since = now

    def result(self, i: int, future):
        """The value of worker i's `future`, waiting as first_result does (WorkerLost on a failure or hang)."""
        return self.first_result({i: future})[1]

    def next_result(self, schedule, heads_fn, on_replaced):
        """(i, value): the next result by `schedule` (an ArrivalSchedule) among `heads_fn()` (worker index ->
        oldest pending future). Failed workers are replaced on the way, each replacement recorded in the
        schedule and followed by `on_replaced(i)` (drop i's lost results, give the new worker work);
        replaying, the recorded replacements are done again at the same points."""
        while True:
            due = schedule.restart_due()
            if due is not None:
                self.replace(due, None)
                schedule.record_restart(due)
                on_replaced(due)
                continue
            heads = heads_fn()
            try:
                if schedule.replaying:
                    i = schedule.expected(heads)
                    value = self.result(i, heads[i])
                else:
                    i, value = self.first_result(heads)
            except WorkerLost as lost:
                if schedule.replaying:
                    raise UnirlError(f"{self.describe(lost.index)} failed while replaying a recorded schedule "
                                     f"({_cause(lost.error)}); a replay cannot absorb a fault the recorded run "
                                     "did not have: run it again.") from None
                self.replace(lost.index, lost.error)
                schedule.record_restart(lost.index)
                on_replaced(lost.index)
                continue
            schedule.record(i)
            return i, value

    # -- state in global env order ------------------------------------------------------------
    def get_states(self) -> list:
        """Every worker's state, concatenated in worker order (global env order for rollout workers)."""
        if self.snapshot and all(s is not None for s in self.snapshots):
            states = self.snapshots
        else:
            states = self.backend.get([self.backend.call(h, "get_state") for h in self.handles])
        return [entry for s in states for entry in s]

    def set_states(self, entries: list, key=lambda e: e["env_index"], ranges=None) -> None:
        """Hand each worker the entries of its own envs (`ranges[i]`: the env indices worker i hosts)."""
        by_index = {key(e): e for e in entries}
        parts = []
        for i, r in enumerate(ranges):
            missing = [g for g in r if g not in by_index]
            if missing:
                raise UnirlError(f"the checkpoint's worker state has no env {missing[0]}; it belongs to a run with "
                                 "fewer envs (resume with the same num_workers x num_envs_per_worker).")
            parts.append([by_index[g] for g in r])
        self.backend.get([self.backend.call(h, "set_state", p) for h, p in zip(self.handles, parts)])
        if self.snapshot:
            self.snapshots = parts
