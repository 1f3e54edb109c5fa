"""ArrivalSchedule: the order in which an asynchronous pattern consumes its workers' results, recorded or replayed.

Free-running, the driver takes results as they arrive, and which arrives first depends on the
machine's timing: such a run cannot be bit-identical to another. What it can be is
*replayable*: the schedule records the worker id of every result it hands out, and a run given
that record consumes the same workers' results in the same order on any backend, waiting for
the one it needs, and so computes the same bits (every worker's own sequence of tasks is
deterministic; only the interleaving was free).

    schedule = ArrivalSchedule(backend, replay=None)       # or replay=[0, 1, 1, 0, ...]
    pending = {worker_id: future, ...}
    wid = schedule.next(pending)                          # whose result to consume now
    value = backend.get(pending.pop(wid))
    schedule.recorded                                     # [0, 1, ...]: save it to replay the run

A negative entry `-1 - w` records that worker w failed and was replaced at that point (its
in-flight results lost, the new worker given the weights of that moment; see
unirl.execution.recovery): replaying, worker w is replaced there again, so a run that survived
faults replays bit for bit too (on a backend that can replace workers: local, multiprocessing, Ray).
"""
from __future__ import annotations

import logging

from unirl.errors import UnirlError

logger = logging.getLogger("unirl.execution")

#: Seconds between warnings while waiting without a limit for a result.
HANG_WARNING_S = 60.0


class ArrivalSchedule:
    """Picks whose result to consume next: the first ready (lowest worker id among those ready),
    recording the choice, or the next entry of a recorded schedule."""

    def __init__(self, backend, replay: list[int] | None = None, timeout: float | None = None):
        self.backend = backend
        self.replay = None if replay is None else [int(w) for w in replay]
        self.timeout = timeout
        self.recorded: list[int] = []

    @property
    def replaying(self) -> bool:
        return self.replay is not None

    def next(self, pending: dict) -> int:
        """The worker id (a key of `pending`, worker id -> future) whose result is consumed now."""
        if not pending:
            raise ValueError("no result is pending")
        if self.replay is not None:
            wid = self.expected(pending)
            self._wait([pending[wid]])
        else:
            ready = self._wait(list(pending.values()))
            ready_ids = {id(f) for f in ready}
            wid = min(w for w, f in pending.items() if id(f) in ready_ids)
        self.recorded.append(wid)
        return wid

    # -- the steps of WorkerGroup.next_result (waiting and fault handling live there) ------------
    def restart_due(self) -> int | None:
        """Replaying: the worker the recorded run replaced at this point, if any."""
        if self.replay is not None and len(self.recorded) < len(self.replay) and self.replay[len(self.recorded)] < 0:
            return -1 - self.replay[len(self.recorded)]
        return None

    def record_restart(self, wid: int) -> None:
        self.recorded.append(-1 - int(wid))

    def expected(self, pending: dict) -> int:
        """Replaying: the worker id whose result the recorded run consumed at this point (checked against `pending`)."""
        step = len(self.recorded)
        if step >= len(self.replay):
            raise UnirlError(f"the replayed schedule ends after {len(self.replay)} results; "
                             "this run asks for more (was it recorded with a longer stop condition?).")
        wid = self.replay[step]
        if wid not in pending:
            raise UnirlError(f"the replayed schedule wants worker {wid}'s result at step {step}, but that worker has "
                             f"no task pending (pending: {sorted(pending)}); the schedule belongs to another config.")
        return wid

    def record(self, wid: int) -> None:
        self.recorded.append(int(wid))

    def _wait(self, futures: list) -> list:
        if self.timeout is None:
            # No limit: wait, but say so every HANG_WARNING_S, so a hung worker never passes silently.
            waited = 0.0
            while True:
                ready, _ = self.backend.wait(futures, num_returns=1, timeout=HANG_WARNING_S)
                if ready:
                    return ready
                waited += HANG_WARNING_S
                logger.warning("no worker has returned a result for %.0f s (workers %s); set worker_timeout_s "
                               "to fail instead of waiting", waited, sorted({f.worker_id for f in futures}))
        ready, _ = self.backend.wait(futures, num_returns=1, timeout=self.timeout)
        if not ready:
            raise UnirlError(f"no worker returned a result within {self.timeout:g} s; a worker may hang "
                             "(raise the timeout in the config if its tasks are this slow).")
        return ready


def read_arrival_schedule(path: str, algorithm: str, num_workers: int | None = None,
                          flag: str = "--replay-schedule") -> list:
    """The arrival schedule recorded in a checkpoint's state.json (of a checkpoint folder, or a run folder's
    latest whole checkpoint) of a run of `algorithm` with `num_workers` workers (None: not checked): the worker
    ids the asynchronous run consumed, in order. Errors name `flag` (the option that gave the path)."""
    import os
    import sys

    from unirl.checkpoint import STATE_FILE, load_latest

    folder, _, state = load_latest(path, say=lambda m: print(m, file=sys.stderr))
    schedule = state.get("arrival_schedule")
    if schedule is None:
        raise UnirlError(f"{flag}: the checkpoint `{folder}` records no arrival schedule: its algorithm, "
                         f"{state.get('algorithm')}, is synchronous (its runs repeat without one).")
    if state.get("algorithm") != algorithm:
        raise UnirlError(f"{flag}: the checkpoint `{folder}` is of {state.get('algorithm')}, not "
                         f"{algorithm}; replay a schedule with the algorithm that recorded it.")
    recorded = (state.get("config") or {}).get("num_workers")
    if num_workers is not None and recorded is not None and recorded != num_workers:
        raise UnirlError(f"{flag}: the checkpoint `{folder}` was recorded with {recorded} workers, this run "
                         f"has {num_workers}; a schedule names workers, so replay it with num_workers={recorded}.")
    if not isinstance(schedule, list) or not all(isinstance(w, int) and not isinstance(w, bool) for w in schedule):
        raise UnirlError(f"{flag}: the `arrival_schedule` in `{os.path.join(folder, STATE_FILE)}` is not "
                         "a list of worker ids (integers).")
    return schedule


def recorded_run(path: str) -> dict:
    """What a run folder's latest whole checkpoint (or a checkpoint folder) says about the run that wrote it:
    {"algorithm", "config", "iteration"}; the config without the keys of where it ran (backend, backend_options)
    and its arrival schedule, so that it can start a replay of that run on any backend."""
    import sys

    from unirl.checkpoint import load_latest

    _, _, state = load_latest(path, say=lambda m: print(m, file=sys.stderr))
    config = {k: v for k, v in (state.get("config") or {}).items()
              if k not in ("backend", "backend_options", "arrival_schedule")}
    return {"algorithm": state.get("algorithm"), "config": config, "iteration": state.get("iteration")}


def replay_config(algo_cls, config: dict, path: str, flag: str = "replay_schedule") -> dict:
    """`config` with the arrival schedule recorded in the run or checkpoint at `path` (config key `arrival_schedule`),
    after checking that `algo_cls` is asynchronous, that the run was of that algorithm and had as many workers."""
    import dataclasses

    if "arrival_schedule" not in {f.name for f in dataclasses.fields(algo_cls.config_class)}:
        raise UnirlError(f"{flag} replays an asynchronous run's arrival schedule, but {algo_cls.name} is "
                         "synchronous (it has no config key `arrival_schedule`).")
    config = dict(config, arrival_schedule=read_arrival_schedule(path, algo_cls.name, flag=flag))
    num_workers = algo_cls.config_class.from_dict(config).num_workers
    read_arrival_schedule(path, algo_cls.name, num_workers, flag=flag)
    return config
