"""The Backend protocol: stateful workers, non-blocking calls, wait-for-first-k, get, shutdown.

Usage (the same on every backend)::

    with get_backend("multiprocessing") as backend:
        workers = backend.spawn(RolloutWorker, [(spec0,), (spec1,)])
        futures = [backend.call(w, "sample", weights) for w in workers]
        # or: futures = backend.broadcast(workers, "sample", weights)   (arguments sent once per process)
        ready, pending = backend.wait(futures, num_returns=1, timeout=10.0)
        batches = backend.get(futures)        # in the order asked, never arrival order

A task's exception is re-raised by `get` as `unirl.errors.WorkerError` carrying the worker's id
and traceback; a worker that dies raises `unirl.errors.WorkerDiedError`; `get(..., timeout=s)`
raises `TimeoutError` when results are not ready in time. The process backends' shared pieces
(thread pinning, running a task, forwarding log records) are at the end of this module.
"""
from __future__ import annotations

import logging
import os
import signal
import traceback
from dataclasses import dataclass
from typing import Any, Sequence

from unirl.errors import WorkerError


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
    #: Workers live in the driver's process (checks that would crash or time a worker skip).
    runs_in_driver = False
    #: Worker processes belong to a job that outlives the backend (MPI ranks end with the job).
    processes_end_with_job = False

    def spawn(self, worker_cls: type, args_list: Sequence[tuple]) -> list[WorkerHandle]:
        """Start one worker per entry of `args_list`, each built as worker_cls(*args)."""
        raise NotImplementedError

    def call(self, handle: WorkerHandle, method: str, *args, **kwargs) -> Future:
        """Run worker.method(*args, **kwargs) without waiting; calls on one worker run in order."""
        raise NotImplementedError

    def broadcast(self, handles: Sequence[WorkerHandle], method: str, *args, **kwargs) -> list[Future]:
        """`call(h, method, *args, **kwargs)` for every handle, one future each, in the order given.

        The same as those calls, only cheaper: the process backends serialize the arguments once
        and move a large array once per process (multiprocessing: one shared-memory segment; Ray:
        one `ray.put`; MPI: one serialization). Workers must treat the arguments as read-only
        (on Ray they are) and must not keep a reference expecting it to stay valid elsewhere.
        """
        return [self.call(h, method, *args, **kwargs) for h in handles]

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

    # -- optional: worker recovery (unirl.execution.recovery) ------------------------------------
    #: The backend can replace a failed worker (`restart`).
    can_restart_workers = False

    def restart(self, handle: WorkerHandle) -> WorkerHandle:
        """Kill the worker if it still runs (hung), fail its pending calls with WorkerDiedError, and start a
        new one built from the same class and arguments; returns the handle to use from now on."""
        raise NotImplementedError(f"the {self.name} backend cannot replace a worker")

    def worker_pid(self, handle: WorkerHandle) -> int | None:
        """The pid of the process hosting this worker (None where not on this host or unknown)."""
        return os.getpid() if self.runs_in_driver else None

    def describe_worker(self, handle: WorkerHandle) -> str:
        """Where a worker runs, for messages: e.g. "pid 1234 on host-a"."""
        return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
        return False


# -- helpers shared by the process backends (multiprocessing, ray, mpi) ---------------------------

#: Environment variables that pin a worker process's thread pools (set before numpy/torch load).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def worker_env(num_threads: int = 1) -> dict[str, str]:
    """Variables for a worker process: pinned thread pools, so a worker never oversubscribes the cores."""
    env = {k: str(num_threads) for k in THREAD_ENV_VARS}
    env["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                        f"intra_op_parallelism_threads={num_threads}").strip()
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_task(worker, worker_id: int, method: str, args, kwargs):
    """(True, value) or (False, (traceback text, exception type name)): a task as a worker runs it."""
    try:
        return True, getattr(worker, method)(*args, **kwargs)
    except Exception as e:
        return False, (traceback.format_exc(), type(e).__name__)


def build_worker(worker_cls, args, worker_id: int):
    """(True, worker) or (False, (traceback, type name)), like run_task, for the constructor."""
    try:
        return True, worker_cls(*args)
    except Exception as e:
        return False, (traceback.format_exc(), type(e).__name__)


def task_error(worker_id: int, payload) -> WorkerError:
    tb, exc_type = payload
    return WorkerError(worker_id, tb, exc_type)


def describe_exit(returncode) -> str:
    """'exit code 3' or 'killed by signal SIGKILL' for a process's return code."""
    if returncode is None:
        return "it stopped answering"
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class LogForwarder(logging.Handler):
    """Installed on a worker process's root logger: turns records into plain dicts for `emit_fn`.

    The driver re-emits them with `replay_log` into its own logging tree, tagged with the worker's id.
    """

    def __init__(self, emit_fn, level=logging.NOTSET):
        super().__init__(level)
        self.emit_fn = emit_fn
        self.worker_id = -1

    def emit(self, record):
        try:
            d = {"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                 "msg": record.getMessage(), "created": record.created, "pathname": record.pathname,
                 "lineno": record.lineno, "funcName": record.funcName, "process": record.process,
                 "worker_id": self.worker_id}
            if record.exc_info:
                d["exc_text"] = logging.Formatter().formatException(record.exc_info)
            self.emit_fn(d)
        except Exception:
            self.handleError(record)


def install_log_forwarder(emit_fn, level: int) -> LogForwarder:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = LogForwarder(emit_fn)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def replay_log(d: dict) -> None:
    """Re-emit a worker's log record (a dict from LogForwarder) in the driver, tagged `[worker N]`."""
    logger = logging.getLogger(d["name"])
    if not logger.isEnabledFor(d["levelno"]):
        return
    d = dict(d, msg=f"[worker {d['worker_id']}] {d['msg']}", args=None)
    logger.handle(logging.makeLogRecord(d))


def driver_log_level() -> int:
    return logging.getLogger().getEffectiveLevel()


class PendingFuture(Future):
    """A future completed later by its backend's message loop: `done`, then `ok` and `value`
    (the result, or the error to raise)."""

    __slots__ = ("worker_id", "done", "ok", "value")

    def __init__(self, worker_id):
        self.worker_id = worker_id
        self.done = False
        self.ok = False
        self.value = None

    def _set(self, ok, value):
        self.done, self.ok, self.value = True, ok, value


def pid_alive(pid: int) -> bool:
    """Whether a process on this host is running (a zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def split_ready(futures: list, num_returns: int) -> tuple[list, list]:
    """wait's answer: (the first `num_returns` done futures, in the order given; all the others)."""
    ready = [f for f in futures if f.done][:num_returns]
    ids = {id(f) for f in ready}
    return ready, [f for f in futures if id(f) not in ids]


def get_when_ready(backend: Backend, futures, timeout: float | None = None):
    """`Backend.get` for futures with `ok` and `value` that the backend's `wait` completes.

    Values come back in the order asked; the first failed future's error is raised.
    """
    single = isinstance(futures, Future)
    items = [futures] if single else list(futures)
    _, pending = backend.wait(items, len(items), timeout)
    if pending:
        raise TimeoutError(f"{len(pending)} of {len(items)} results not ready after {timeout} s")
    values = []
    for f in items:
        if not f.ok:
            raise f.value
        values.append(f.value)
    return values[0] if single else values
