"""The Ray backend: one actor per worker, on this machine (`ray.init()`) or on a cluster (`address`).

Options (config `backend_options`): `address` ("auto", "ray://...", "host:port") joins an existing
cluster, otherwise a small local Ray starts (no dashboard) and stops again at shutdown;
`connect_timeout_s` (default 10: an `address` where nothing answers within it is an error, not Ray's
minutes of retries); `num_cpus_per_worker` (default 0, so any number of workers fits on a small machine; raise it on
a cluster to reserve cores); `num_threads` per worker (default 1); `placement` ("SPREAD" by
default: actors go to different nodes where the cluster has several).

Arrays move through Ray's object store (zero-copy reads: arrays a worker returns arrive
read-only in the driver). Calls on one actor run in submission order. A task's exception comes
back as a value carrying the worker's traceback, re-raised as `WorkerError`; a dead actor
(killed, crashed) makes `get` raise `WorkerDiedError`. Log records a worker emits during a call
come back with its result and are re-emitted in the driver's logging tree as `[worker N] ...`;
the actor's stdout/stderr also reach the driver through Ray's log_to_driver, prefixed with
`unirl-worker-N`.
"""
from __future__ import annotations

import os

import cloudpickle
import ray

from unirl.backends import base
from unirl.errors import UnirlError, WorkerDiedError


class _Outcome:
    """What a call returns when the plain value will not do: a failure, or log records to re-emit."""

    __slots__ = ("ok", "value", "logs")

    def __init__(self, ok, value, logs):
        self.ok, self.value, self.logs = ok, value, logs

    def __reduce__(self):
        return _Outcome, (self.ok, self.value, self.logs)


class _Host:
    """The actor: builds the worker and runs its methods, capturing the worker's log records."""

    def __init__(self, worker_id, cls_bytes, args, log_level, env):
        # Pin thread pools before the worker's framework is imported (it loads when the class is
        # unpickled or built). A runtime_env would do the same but costs a fresh worker process per
        # actor (seconds each); Ray itself already sets OMP_NUM_THREADS=1 for zero-CPU actors.
        os.environ.update(env)
        self.worker_id = worker_id
        self.logs = []
        handler = base.install_log_forwarder(self.logs.append, log_level)
        handler.worker_id = worker_id
        ok, value = base.build_worker(cloudpickle.loads(cls_bytes), args, worker_id)
        self.worker = value if ok else None
        self.init_result = (ok, None if ok else value)

    def __repr__(self):
        return f"unirl-worker-{self.worker_id}"

    def _reply(self, ok, value):
        # The common case (success, nothing logged) returns the bare value: the round trip then costs
        # what a plain actor call costs.
        if ok and not self.logs:
            return value
        logs, self.logs[:] = list(self.logs), []
        return _Outcome(ok, value, logs)

    def ready(self):
        return self._reply(*self.init_result)

    def call(self, method, args=(), kwargs=None):
        return self._reply(*base.run_task(self.worker, self.worker_id, method, args, kwargs or {}))

    def call_packed(self, method, packed):
        """`call` with (args, kwargs) given as one top-level argument: a broadcast's shared ObjectRef, which
        Ray resolves from the object store (zero-copy for arrays) before the call runs."""
        return self.call(method, *packed)

    def where(self):
        import socket

        return f"pid {os.getpid()} on {socket.gethostname()}"

    def pid_and_host(self):
        import socket

        return os.getpid(), socket.gethostname()

    def node_id(self):
        return ray.get_runtime_context().get_node_id()

    def close(self):
        close = getattr(self.worker, "close", None)
        if close is not None:
            close()
        return True


def _method_names(worker_cls) -> tuple[str, ...]:
    """The worker class's public methods: each becomes an actor method of its own (see `_host_class`)."""
    return tuple(sorted(n for n in dir(worker_cls) if not n.startswith("_") and callable(getattr(worker_cls, n, None))))


def _host_class(names: tuple[str, ...]) -> type:
    """A `_Host` with one actor method `w_<name>` per worker method: a call then passes the worker's own
    arguments only (no method name, no packed tuple), as a bare actor call would."""

    def method(name):
        def run(self, *args, **kwargs):
            return self._reply(*base.run_task(self.worker, self.worker_id, name, args, kwargs))

        run.__name__ = "w_" + name
        return run

    return type("_Host", (_Host,), {"w_" + n: method(n) for n in names})


class RayFuture(base.Future):
    __slots__ = ("worker_id", "ref")

    def __init__(self, worker_id, ref):
        self.worker_id = worker_id
        self.ref = ref


def _check_reachable(address: str, timeout: float) -> None:
    """Fail within `timeout` seconds if nothing listens at a "host:port" or "ray://host:port" address
    (ray.init itself retries an unreachable address for minutes); "auto" is left to Ray."""
    import socket

    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        reason = "no answer" if isinstance(e, socket.timeout) else (e.strerror or str(e))
        raise UnirlError(f"cannot reach the Ray cluster at `{address}` within {timeout:g} s ({reason}); start "
                         "one with `ray start --head`, check the address and firewall, or leave `address` "
                         "unset for a local Ray.") from None


class Backend(base.Backend):
    name = "ray"

    def __init__(self, address: str | None = None, num_cpus_per_worker: float = 0, num_threads: int = 1,
                 placement: str = "SPREAD", num_cpus: int | None = None, connect_timeout_s: float = 10.0,
                 **_ignored):
        self._owns_ray = False
        if not ray.is_initialized():
            try:
                if address:
                    _check_reachable(address, connect_timeout_s)
                    ray.init(address=address, log_to_driver=True, logging_level="WARNING")
                else:
                    # "local": always a fresh instance, never a stray `ray start` cluster found in /tmp/ray.
                    ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                             log_to_driver=True, logging_level="WARNING")
            except ConnectionError as e:
                raise UnirlError(f"cannot join the Ray cluster at `{address}`: {e}; start one with "
                                 f"`ray start --head` or leave `address` unset for a local Ray.") from None
            self._owns_ray = True
        self._remotes: dict = {}  # method names -> the Ray actor class hosting such workers
        self._options = {"num_cpus": num_cpus_per_worker, "scheduling_strategy": placement}
        self._env = base.worker_env(num_threads)
        self._actors: list = []
        self._recipes: list[tuple] = []  # (pickled class, args) per worker id: what `restart` rebuilds
        self._methods: list[frozenset] = []  # per worker id: the worker methods with an actor method of their own
        self._where: list[str] = []
        self._closed = False

    def _remote_for(self, names):
        if names not in self._remotes:
            self._remotes[names] = ray.remote(max_restarts=0, max_task_retries=0)(_host_class(names))
        return self._remotes[names]

    can_restart_workers = True

    def spawn(self, worker_cls, args_list):
        cls_bytes = cloudpickle.dumps(worker_cls)
        names = _method_names(worker_cls)
        remote = self._remote_for(names)
        level = base.driver_log_level()
        new = []
        for args in args_list:
            wid = len(self._actors)
            actor = remote.options(name=None, **self._options).remote(wid, cls_bytes, tuple(args), level, self._env)
            self._actors.append(actor)
            self._recipes.append((cls_bytes, tuple(args), names))
            self._methods.append(frozenset(names))
            self._where.append("")
            new.append(wid)
        self.get([RayFuture(wid, self._actors[wid].ready.remote()) for wid in new])
        self._locate(new)
        return [base.WorkerHandle(wid) for wid in new]

    def _locate(self, wids):
        try:
            for wid, w in zip(wids, ray.get([self._actors[w].where.remote() for w in wids], timeout=30)):
                self._where[wid] = w
        except Exception:
            pass

    def restart(self, handle):
        wid = handle.worker_id
        try:
            ray.kill(self._actors[wid], no_restart=True)
        except Exception:
            pass
        cls_bytes, args, names = self._recipes[wid]
        self._actors[wid] = self._remote_for(names).options(name=None, **self._options).remote(
            wid, cls_bytes, args, base.driver_log_level(), self._env)
        self.get(RayFuture(wid, self._actors[wid].ready.remote()))
        self._locate([wid])
        return base.WorkerHandle(wid)

    def describe_worker(self, handle):
        return self._where[handle.worker_id]

    def worker_pid(self, handle):
        import socket

        pid, host = ray.get(self._actors[handle.worker_id].pid_and_host.remote(), timeout=30)
        return pid if host == socket.gethostname() else None

    def call(self, handle, method, *args, **kwargs):
        wid = handle.worker_id
        actor = self._actors[wid]
        if method in self._methods[wid]:
            return RayFuture(wid, getattr(actor, "w_" + method).remote(*args, **kwargs))
        return RayFuture(wid, actor.call.remote(method, args, kwargs))

    def broadcast(self, handles, method, *args, **kwargs):
        """One `ray.put` of the arguments, then a call per worker that reads them from the object store."""
        handles = list(handles)
        if len(handles) < 2:
            return [self.call(h, method, *args, **kwargs) for h in handles]
        ref = ray.put((args, kwargs))
        return [RayFuture(h.worker_id, self._actors[h.worker_id].call_packed.remote(method, ref)) for h in handles]

    def wait(self, futures, num_returns=1, timeout=None):
        futures = list(futures)
        if not futures:
            return [], []
        by_ref = {f.ref: f for f in futures}
        ready, _ = ray.wait([f.ref for f in futures], num_returns=min(num_returns, len(futures)),
                            timeout=timeout, fetch_local=False)
        ready_ids = {id(by_ref[r]) for r in ready}
        return [by_ref[r] for r in ready], [f for f in futures if id(f) not in ready_ids]

    def get(self, futures, timeout=None):
        single = isinstance(futures, base.Future)
        items = [futures] if single else list(futures)
        if timeout is not None:
            _, pending = self.wait(items, len(items), timeout)
            if pending:
                raise TimeoutError(f"{len(pending)} of {len(items)} results not ready after {timeout} s")
        values = []
        for f in items:
            try:
                out = ray.get(f.ref)
            except ray.exceptions.RayActorError as e:
                raise WorkerDiedError(f.worker_id, _first_line(e)) from None
            if type(out) is _Outcome:
                for d in out.logs:
                    base.replay_log(d)
                if not out.ok:
                    raise base.task_error(f.worker_id, out.value)
                out = out.value
            values.append(out)
        return values[0] if single else values

    def shutdown(self):
        if self._closed:
            return
        self._closed = True
        if ray.is_initialized():
            closes = [a.close.remote() for a in self._actors]
            try:
                ray.wait(closes, num_returns=len(closes), timeout=10.0)
            except Exception:
                pass
            for a in self._actors:
                try:
                    ray.kill(a)
                except Exception:
                    pass
            if self._owns_ray:
                ray.shutdown()
        self._actors = []

    # -- extras -------------------------------------------------------------------------------
    def worker_nodes(self) -> list[str]:
        """The Ray node id of each worker, in worker order."""
        return ray.get([a.node_id.remote() for a in self._actors])


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[0] if lines else type(e).__name__
