"""The multiprocessing backend: one child process per worker on this machine, talking over a socket pair.

Why not `multiprocessing.Process`: its spawn start method re-imports the user's `__main__` (a
script without an `if __name__ == "__main__"` guard then breaks), and fork is unsafe once torch's
or OpenMP's threads exist. A worker here is `python -c "...serve(fd)"` started with
`subprocess.Popen`, with its thread pools pinned through its environment.

Wire format: a message is pickled with protocol 5; NumPy arrays (and any other contiguous
buffer) travel out of band as raw bytes written straight from the array's memory and read
into a fresh writable buffer, never element by element.

Inside a worker a reader thread drains the socket into a queue, so the driver's send never
blocks on a worker that is itself busy sending a large result; it also ends the process when
the driver goes away (EOF on the socket), even in the middle of a task. SIGINT is ignored in
workers: Ctrl-C reaches the driver, which shuts them down.

Worker log records travel as separate messages on the same socket and are re-emitted in the
driver's logging tree as `[worker N] ...` whenever the driver reads (wait/get/shutdown).
(multiprocessing-logging's handler works only with the fork start method, so the forwarding
is done here, spawn-safe.)
"""
from __future__ import annotations

import collections
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import cloudpickle

from unirl.backends import base
from unirl.errors import WorkerDiedError

_COUNT = struct.Struct("<I")


def send_msg(sock: socket.socket, obj, pickler=pickle) -> None:
    """Send one object; contiguous buffers (NumPy arrays) go out of band as raw bytes."""
    buffers = []
    head = pickler.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [b.raw() for b in buffers]
    sizes = struct.pack(f"<{len(raws) + 1}Q", len(head), *(r.nbytes for r in raws))
    sock.sendall(_COUNT.pack(len(raws)) + sizes + head)
    for r in raws:
        sock.sendall(r)


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise EOFError("connection closed")
        got += k
    return buf


def recv_msg(sock: socket.socket):
    (n,) = _COUNT.unpack(_recv_exact(sock, _COUNT.size))
    sizes = struct.unpack(f"<{n + 1}Q", _recv_exact(sock, 8 * (n + 1)))
    head = _recv_exact(sock, sizes[0])
    buffers = [_recv_exact(sock, s) for s in sizes[1:]]
    return pickle.loads(head, buffers=buffers)


# -- the worker process ---------------------------------------------------------------------------

def serve(fd: int) -> None:
    """Main loop of a worker process: build the worker, then run calls in the order received."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    send_lock = threading.Lock()
    inbox: "collections.deque" = collections.deque()
    ready = threading.Semaphore(0)

    def send(obj):
        with send_lock:
            send_msg(sock, obj)

    def reader():
        while True:
            try:
                msg = recv_msg(sock)
            except (EOFError, OSError):
                # The driver is gone: end now, even if the main thread is inside a task.
                os._exit(0)
            inbox.append(msg)
            ready.release()

    threading.Thread(target=reader, daemon=True, name="unirl-reader").start()
    worker, worker_id, forwarder = None, -1, None
    while True:
        ready.acquire()
        msg = inbox.popleft()
        kind = msg[0]
        if kind == "call":
            _, method, args, kwargs = msg
            send(("r",) + base.run_task(worker, worker_id, method, args, kwargs))
        elif kind == "init":
            _, worker_id, cls_bytes, args, log_level = msg
            forwarder = base.install_log_forwarder(lambda d: send(("log", d)), log_level)
            forwarder.worker_id = worker_id
            ok, value = base.build_worker(cloudpickle.loads(cls_bytes), args, worker_id)
            if ok:
                worker = value
            send(("r", ok, None if ok else value))
        elif kind == "stop":
            close = getattr(worker, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            send(("r", True, None))
            return


# -- the driver side ------------------------------------------------------------------------------

class MPFuture(base.Future):
    __slots__ = ("worker_id", "done", "ok", "value")

    def __init__(self, worker_id):
        self.worker_id = worker_id
        self.done = False
        self.ok = False
        self.value = None

    def _set(self, ok, value):
        self.done, self.ok, self.value = True, ok, value


class _Proc:
    """Driver-side record of one worker process."""

    def __init__(self, worker_id, popen, sock):
        self.worker_id = worker_id
        self.popen = popen
        self.sock = sock
        self.pending: collections.deque[MPFuture] = collections.deque()
        self.dead: str | None = None


class Backend(base.Backend):
    """Workers in child processes of this machine. Options: `num_threads` per worker (default 1)."""

    name = "multiprocessing"

    def __init__(self, num_threads: int = 1, start_timeout: float = 300.0, **_ignored):
        self.num_threads = num_threads
        self.start_timeout = start_timeout
        self._procs: list[_Proc] = []
        self._selector = selectors.DefaultSelector()
        self._closed = False

    # -- protocol ---------------------------------------------------------------------------
    def spawn(self, worker_cls, args_list):
        env = dict(os.environ)
        env.update(base.worker_env(self.num_threads))
        cls_bytes = cloudpickle.dumps(worker_cls)
        new, inits = [], []
        for args in args_list:
            wid = len(self._procs)
            parent, child = socket.socketpair()
            fd = child.fileno()
            popen = subprocess.Popen(
                [sys.executable, "-c", f"from unirl.backends.multiprocessing import serve; serve({fd})"],
                pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
            child.close()
            proc = _Proc(wid, popen, parent)
            self._procs.append(proc)
            self._selector.register(parent, selectors.EVENT_READ, proc)
            new.append(proc)
        log_level = base.driver_log_level()
        for proc, args in zip(new, args_list):
            inits.append(self._submit(proc, ("init", proc.worker_id, cls_bytes, tuple(args), log_level)))
        self.get(inits, timeout=self.start_timeout)
        return [base.WorkerHandle(p.worker_id) for p in new]

    def call(self, handle, method, *args, **kwargs):
        return self._submit(self._procs[handle.worker_id], ("call", method, args, kwargs))

    def wait(self, futures, num_returns=1, timeout=None):
        futures = list(futures)
        num_returns = min(num_returns, len(futures))
        deadline = None if timeout is None else time.monotonic() + timeout
        while sum(f.done for f in futures) < num_returns:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._pump(left)
        ready = [f for f in futures if f.done][:num_returns]
        ids = {id(f) for f in ready}
        return ready, [f for f in futures if id(f) not in ids]

    def get(self, futures, timeout=None):
        single = isinstance(futures, base.Future)
        items = [futures] if single else list(futures)
        ready, pending = self.wait(items, len(items), timeout)
        if pending:
            raise TimeoutError(f"{len(pending)} of {len(items)} results not ready after {timeout} s")
        values = []
        for f in items:
            if not f.ok:
                raise f.value
            values.append(f.value)
        return values[0] if single else values

    def shutdown(self):
        if self._closed:
            return
        self._closed = True
        stops = []
        for p in self._procs:
            if p.dead is None:
                try:
                    stops.append(self._submit(p, ("stop",)))
                except Exception:
                    pass
        try:
            self.wait(stops, len(stops), timeout=10.0)
        except Exception:
            pass
        for p in self._procs:
            try:
                p.popen.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
            try:
                self._selector.unregister(p.sock)
            except (KeyError, ValueError):
                pass
            p.sock.close()
        self._selector.close()

    def __del__(self):
        try:
            self.shutdown()
        except Exception:
            pass

    # -- extras used by tests and the benchmark -------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [p.popen.pid for p in self._procs]

    # -- internals --------------------------------------------------------------------------
    def _submit(self, proc: _Proc, msg) -> MPFuture:
        fut = MPFuture(proc.worker_id)
        if proc.dead is not None:
            fut._set(False, WorkerDiedError(proc.worker_id, proc.dead))
            return fut
        proc.pending.append(fut)
        try:
            send_msg(proc.sock, msg)
        except OSError:
            self._mark_dead(proc)
        return fut

    def _pump(self, timeout):
        """Read whatever has arrived (results, log records, deaths); wait at most `timeout` seconds."""
        for key, _ in self._selector.select(timeout):
            proc = key.data
            try:
                while True:
                    msg = recv_msg(proc.sock)
                    if msg[0] == "log":
                        base.replay_log(msg[1])
                    else:
                        proc.pending.popleft()._set(msg[1], msg[2] if msg[1] else
                                                    base.task_error(proc.worker_id, msg[2]))
                    r, _, _ = _select_now(proc.sock)
                    if not r:
                        break
            except (EOFError, OSError):
                self._mark_dead(proc)

    def _mark_dead(self, proc: _Proc) -> None:
        try:
            code = proc.popen.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            code = proc.popen.wait()
        proc.dead = f"its process (pid {proc.popen.pid}) ended: {base.describe_exit(code)}"
        try:
            self._selector.unregister(proc.sock)
        except (KeyError, ValueError):
            pass
        while proc.pending:
            proc.pending.popleft()._set(False, WorkerDiedError(proc.worker_id, proc.dead))


def _select_now(sock):
    import select

    return select.select([sock], [], [], 0)
