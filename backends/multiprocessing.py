"""The multiprocessing backend: one child process per worker on this machine, talking over a socket pair.

Why not `multiprocessing.Process`: its spawn start method re-imports the user's `__main__` (a
script without an `if __name__ == "__main__"` guard then breaks), and forking the driver is unsafe
once torch's or OpenMP's threads exist. Instead a *template* process (`python -c ...`, started
with `subprocess.Popen`, thread pools pinned through its environment) imports what the workers
need once (the worker class's module and what `worker_cls.preload_modules(*args)` names, e.g.
the framework adapter) while it is still single-threaded, then forks one worker per request: a
worker starts in milliseconds instead of importing torch again. The template reaps the workers
and reports their exit codes. `start_method="exec"` starts every worker as its own
`python -c "...serve(fd)"` instead.

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

_HEADER = struct.Struct("<II")  # number of out-of-band buffers, length of the shared segment's path
_SHARED = 1 << 63  # a buffer size with this bit set: the buffer lies in the shared segment (8-byte offset on the wire)

#: Longest wait in `broadcast` for release notes that are due (every call of a segment answered).
RELEASE_NOTE_WAIT_S = 0.05

#: Out-of-band buffers at least this large travel through a shared-memory segment in `broadcast`.
SHARED_MIN_BYTES = 1 << 20
SHM_DIR = "/dev/shm"


def send_msg(sock: socket.socket, obj, pickler=pickle) -> None:
    """Send one object; contiguous buffers (NumPy arrays) go out of band as raw bytes."""
    buffers = []
    head = pickler.dumps(obj, protocol=5, buffer_callback=buffers.append)
    send_frame(sock, head, [b.raw() for b in buffers])


def send_frame(sock: socket.socket, head: bytes, raws: list, segment: "_Segment | None" = None,
               offsets: dict | None = None) -> None:
    """Write one pickled message; buffer i with an entry in `offsets` is read from `segment` instead of the wire."""
    path = segment.path.encode() if segment is not None else b""
    sizes = [len(head)]
    for i, r in enumerate(raws):
        sizes.append(r.nbytes | _SHARED if offsets and i in offsets else r.nbytes)
    frame = [_HEADER.pack(len(raws), len(path)), struct.pack(f"<{len(sizes)}Q", *sizes), path, head]
    for i, r in enumerate(raws):
        if offsets and i in offsets:
            frame.append(struct.pack("<Q", offsets[i]))
        elif r.nbytes < 65536:
            frame.append(r)
        else:
            sock.sendall(b"".join(frame))
            sock.sendall(r)
            frame = []
    if frame:
        sock.sendall(b"".join(frame))


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


_FIRST = struct.Struct("<IIQ")  # the header and the pickle's length: one read for a message without buffers


def recv_msg(sock: socket.socket, mappings: list | None = None):
    """One message; buffers in a shared segment are mapped copy-on-write (no copy) and the mapping is
    appended to `mappings` as (path, mmap), so the caller can release it (see `_release_mappings`)."""
    n, path_len, head_len = _FIRST.unpack(_recv_exact(sock, _FIRST.size))
    sizes = (head_len,) + (struct.unpack(f"<{n}Q", _recv_exact(sock, 8 * n)) if n else ())
    path = _recv_exact(sock, path_len).decode() if path_len else None
    head = _recv_exact(sock, sizes[0])
    buffers, mapped = [], None
    for s in sizes[1:]:
        if s & _SHARED:
            (offset,) = struct.unpack("<Q", _recv_exact(sock, 8))
            if mapped is None:
                mapped = _map_shared(path)
                if mappings is not None:
                    mappings.append((path, mapped))
            buffers.append(memoryview(mapped)[offset:offset + (s & ~_SHARED)])
        else:
            buffers.append(_recv_exact(sock, s))
    return pickle.loads(head, buffers=buffers)


def _map_shared(path: str):
    """The segment mapped private and writable: reading costs no copy, a write copies only its page
    (the driver's file never changes under the worker: it rewrites a segment only once every worker
    has released it)."""
    import mmap

    fd = os.open(path, os.O_RDONLY)
    try:
        return mmap.mmap(fd, 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)


def _release_mappings(mappings: list, send, final: bool = True) -> bool:
    """After a task: unmap each segment nothing refers to any more and tell the driver ("shm", path, kept);
    a segment the worker still holds a view of (it kept an array) is `kept`: the driver never rewrites it.
    With `final=False`, does nothing and returns False if some view is still alive (the reply may hold it)."""
    if not final:
        for _, mapped in mappings:
            try:
                mapped.close()
            except BufferError:
                return False
    for path, mapped in mappings:
        try:
            mapped.close()
            kept = False
        except BufferError:
            kept = True
        send(("shm", path, kept))
    mappings.clear()
    return True


class _Segment:
    """A file in /dev/shm that the driver writes broadcast buffers into; reused across broadcasts
    (rewriting pages that already exist costs a copy; fresh tmpfs pages cost several times more)."""

    def __init__(self, path: str, size: int):
        import mmap

        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self.mm = mmap.mmap(fd, size)
        except OSError:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self.path, self.size = path, size

    def write(self, offset: int, raw) -> None:
        self.mm[offset:offset + raw.nbytes] = raw

    def close(self) -> None:
        try:
            self.mm.close()
        except BufferError:
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass


class _SegmentPool:
    """The driver's shared segments: busy ones (until every call of their broadcast is answered), then free."""

    MAX_FREE_BYTES = 256 << 20

    def __init__(self):
        self.prefix = f"unirl-mp-{os.getpid()}-{id(self):x}-"
        self.count = 0
        self.free: list[_Segment] = []
        self.busy: list[tuple[_Segment, list]] = []
        _remove_stale_segments()

    def acquire(self, nbytes: int, is_dead=lambda worker_id: False) -> _Segment:
        self.recycle(is_dead)
        fits = [s for s in self.free if s.size >= nbytes]
        if fits:
            seg = min(fits, key=lambda s: s.size)
            self.free.remove(seg)
            return seg
        self.count += 1
        return _Segment(os.path.join(SHM_DIR, f"{self.prefix}{self.count}"), max(nbytes, 1 << 20))

    def hold(self, seg: _Segment, futures: list) -> None:
        """`seg` is in use until every future's worker has said it released the segment (or is dead)."""
        seg.waiting = collections.Counter(f.worker_id for f in futures)
        seg.futures = futures
        seg.kept = False
        self.busy.append((seg, futures))

    def note(self, path: str, worker_id: int, kept: bool) -> None:
        """A worker's ("shm", path, kept) message: it unmapped the segment, or keeps a view of it."""
        for seg, _ in self.busy:
            if seg.path == path and seg.waiting[worker_id] > 0:
                seg.waiting[worker_id] -= 1
                seg.kept = seg.kept or kept
                return

    def due(self, is_dead=lambda worker_id: False) -> bool:
        """Some busy segment has every call answered and waits only for live workers' release notes, which
        follow their replies at once (a reply that held a view of the segment is sent first)."""
        return any(all(f.done for f in futures) and any(k > 0 and not is_dead(w) for w, k in seg.waiting.items())
                   for seg, futures in self.busy)

    def recycle(self, is_dead=lambda worker_id: False) -> None:
        if not self.busy:
            return
        still = []
        for seg, futures in self.busy:
            waiting = [w for w, k in seg.waiting.items() if k > 0 and not is_dead(w)]
            if waiting or not all(f.done for f in futures):
                still.append((seg, futures))
            elif seg.kept:  # a worker holds a view: never rewrite it; the file goes, its pages stay mapped there
                seg.close()
            else:
                self.free.append(seg)
        self.busy = still
        self.free.sort(key=lambda s: -s.size)
        while sum(s.size for s in self.free) > self.MAX_FREE_BYTES:
            self.free.pop().close()

    def close(self) -> None:
        for seg in self.free + [seg for seg, _ in self.busy]:
            seg.close()
        self.free, self.busy = [], []


def _remove_stale_segments() -> None:
    """Remove segments left in /dev/shm by drivers that no longer run (killed before their shutdown)."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return
    for name in names:
        if name.startswith("unirl-mp-"):
            try:
                pid = int(name.split("-")[2])
            except (IndexError, ValueError):
                continue
            if not base.pid_alive(pid):
                try:
                    os.unlink(os.path.join(SHM_DIR, name))
                except OSError:
                    pass


# -- the worker process ---------------------------------------------------------------------------

def serve(fd: int) -> None:
    """Main loop of a worker process: build the worker, then run calls in the order received."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a scheduler's SIGTERM is the driver's to handle
    sock = socket.socket(fileno=fd)
    send_lock = threading.Lock()
    inbox: "collections.deque" = collections.deque()
    ready = threading.Semaphore(0)

    def send(obj):
        with send_lock:
            send_msg(sock, obj)

    def reader():
        while True:
            mappings = []
            try:
                # No local name for the message: a view of a shared segment must die with the task.
                inbox.append((recv_msg(sock, mappings), mappings))
            except (EOFError, OSError):
                # The driver is gone: end now, even if the main thread is inside a task.
                os._exit(0)
            ready.release()

    threading.Thread(target=reader, daemon=True, name="unirl-reader").start()
    worker, worker_id, forwarder = None, -1, None
    while True:
        ready.acquire()
        msg, mappings = inbox.popleft()
        kind = msg[0]
        if kind == "call":
            _, method, args, kwargs = msg
            reply = ("r",) + base.run_task(worker, worker_id, method, args, kwargs)
            if mappings:
                # Release before replying where possible, so the driver knows by the time the call is done.
                del msg, args, kwargs
                if not _release_mappings(mappings, send, final=False):
                    send(reply)
                    del reply
                    _release_mappings(mappings, send)
                    continue
            send(reply)
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


# -- the template process (forks workers) -------------------------------------------------------

def template_main(fd: int) -> None:
    """Main loop of the template: import modules on request, fork a worker per request, report exits."""
    import importlib
    import select

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctrl = socket.socket(fileno=fd)

    def reply(obj):
        try:
            ctrl.send(pickle.dumps(obj))
        except OSError:
            os._exit(0)  # the driver is gone (it exited without stop()): nothing left to report to

    while True:
        readable, _, _ = select.select([ctrl], [], [], 0.2)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reply(("exited", pid, os.waitstatus_to_exitcode(status)))
        if not readable:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(ctrl, 1 << 20, 1)
        except OSError:
            return  # the driver is gone (it exited without stop())
        if not data:
            return  # the driver closed the control socket
        msg = pickle.loads(data)
        if msg[0] == "preload":
            errors = []
            for name in msg[1]:
                try:
                    importlib.import_module(name)
                except Exception as e:  # the worker will then import (and report) it itself
                    errors.append(f"{name}: {type(e).__name__}: {e}")
            reply(("preloaded", errors))
        elif msg[0] == "fork":
            pid = os.fork()
            if pid == 0:
                ctrl.close()
                try:
                    serve(fds[0])
                finally:
                    os._exit(0)
            os.close(fds[0])
            reply(("forked", pid))


class _Template:
    """Driver-side handle of the template process."""

    def __init__(self, env: dict):
        ctrl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fd = child.fileno()
        self.popen = subprocess.Popen(
            [sys.executable, "-c", f"from unirl.backends.multiprocessing import template_main; template_main({fd})"],
            pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        child.close()
        self.ctrl = ctrl
        self.exits: dict[int, int] = {}
        self.preloaded: set[str] = set()

    def _expect(self, kind: str, timeout: float = 300.0):
        deadline = time.monotonic() + timeout
        while True:
            msg = self._read(max(0.0, deadline - time.monotonic()))
            if msg is not None and msg[0] == kind:
                return msg
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the worker template did not answer `{kind}` in {timeout} s")

    def _read(self, timeout: float):
        """One message other than an exit report (those are recorded), or None."""
        import select

        deadline = time.monotonic() + timeout
        while True:
            r, _, _ = select.select([self.ctrl], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                return None
            data = self.ctrl.recv(1 << 20)
            if not data:
                raise EOFError("the worker template ended")
            msg = pickle.loads(data)
            if msg[0] != "exited":
                return msg
            self.exits[msg[1]] = msg[2]

    def preload(self, modules: list[str]) -> None:
        todo = [m for m in modules if m not in self.preloaded]
        if todo:
            self.ctrl.send(pickle.dumps(("preload", todo)))
            self._expect("preloaded")
            self.preloaded.update(todo)

    def fork(self, fd: int) -> "_Forked":
        socket.send_fds(self.ctrl, [pickle.dumps(("fork",))], [fd])
        return _Forked(self._expect("forked", 60.0)[1], self)

    def close(self) -> None:
        self.ctrl.close()
        try:
            self.popen.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


class _Forked:
    """A worker forked by the template: the part of Popen's interface the backend uses."""

    def __init__(self, pid: int, template: _Template):
        self.pid = pid
        self.template = template

    def wait(self, timeout: float | None = None):
        deadline = time.monotonic() + (10.0 if timeout is None else timeout)
        while True:
            if self.pid in self.template.exits:
                return self.template.exits[self.pid]
            try:
                self.template._read(0.05)
            except (EOFError, OSError):
                if not base.pid_alive(self.pid):
                    return None
                time.sleep(0.05)
            if time.monotonic() >= deadline:
                if timeout is None:
                    return None
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout)

    def kill(self) -> None:
        if self.pid not in self.template.exits:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# -- the driver side ------------------------------------------------------------------------------

MPFuture = base.PendingFuture


class _Proc:
    """Driver-side record of one worker process."""

    def __init__(self, worker_id, popen, sock):
        self.worker_id = worker_id
        self.popen = popen
        self.sock = sock
        self.pending: collections.deque[MPFuture] = collections.deque()
        self.dead: str | None = None


class Backend(base.Backend):
    """Workers in child processes of this machine.

    Options: `num_threads` per worker (default 1); `start_method` "template" (default: fork workers
    from a process that imported their modules once) or "exec" (a fresh interpreter per worker);
    `start_timeout` seconds for workers to be built.
    """

    name = "multiprocessing"

    def __init__(self, num_threads: int = 1, start_method: str = "template", start_timeout: float = 300.0,
                 **_ignored):
        from unirl.errors import UnirlError

        if start_method not in ("template", "exec"):
            raise UnirlError(f"backend option `start_method` must be \"template\" or \"exec\", got {start_method!r}.")
        self.num_threads = num_threads
        self.start_method = start_method
        self.start_timeout = start_timeout
        self._template: _Template | None = None
        self._procs: list[_Proc] = []
        self._recipes: list[tuple] = []  # (pickled class, args) per worker id: what `restart` rebuilds
        self._selector = selectors.DefaultSelector()
        self._segments: _SegmentPool | None = None
        self._closed = False

    # -- protocol ---------------------------------------------------------------------------
    can_restart_workers = True

    def spawn(self, worker_cls, args_list):
        env = dict(os.environ)
        env.update(base.worker_env(self.num_threads))
        cls_bytes = cloudpickle.dumps(worker_cls)
        new, inits = [], []
        if self.start_method == "template" and args_list:
            if self._template is None:
                self._template = _Template(env)
            self._template.preload(_modules_to_preload(worker_cls, args_list))
        for args in args_list:
            wid = len(self._procs)
            proc = self._start_proc(wid, env)
            self._procs.append(proc)
            self._recipes.append((cls_bytes, tuple(args)))
            new.append(proc)
        log_level = base.driver_log_level()
        for proc, args in zip(new, args_list):
            inits.append(self._submit(proc, ("init", proc.worker_id, cls_bytes, tuple(args), log_level)))
        self.get(inits, timeout=self.start_timeout)
        return [base.WorkerHandle(p.worker_id) for p in new]

    def _start_proc(self, wid, env=None) -> "_Proc":
        if env is None:
            env = dict(os.environ)
            env.update(base.worker_env(self.num_threads))
        parent, child = socket.socketpair()
        fd = child.fileno()
        if self._template is not None:
            popen = self._template.fork(fd)
        else:
            popen = subprocess.Popen(
                [sys.executable, "-c", f"from unirl.backends.multiprocessing import serve; serve({fd})"],
                pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        child.close()
        proc = _Proc(wid, popen, parent)
        self._selector.register(parent, selectors.EVENT_READ, proc)
        return proc

    def restart(self, handle):
        wid = handle.worker_id
        old = self._procs[wid]
        if old.dead is None:
            old.popen.kill()
            self._mark_dead(old)
        try:
            old.sock.close()
        except OSError:
            pass
        proc = self._start_proc(wid)
        self._procs[wid] = proc
        cls_bytes, args = self._recipes[wid]
        self.get(self._submit(proc, ("init", wid, cls_bytes, args, base.driver_log_level())),
                 timeout=self.start_timeout)
        return base.WorkerHandle(wid)

    def describe_worker(self, handle):
        return f"pid {self._procs[handle.worker_id].popen.pid} on {socket.gethostname()}"

    def call(self, handle, method, *args, **kwargs):
        return self._submit(self._procs[handle.worker_id], ("call", method, args, kwargs))

    def broadcast(self, handles, method, *args, **kwargs):
        """`call` on every handle, pickled once; buffers of SHARED_MIN_BYTES or more are written once into a
        shared-memory segment that every worker copies from, instead of crossing every worker's socket."""
        handles = list(handles)
        buffers = []
        head = pickle.dumps(("call", method, args, kwargs), protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        big = [i for i, r in enumerate(raws) if r.nbytes >= SHARED_MIN_BYTES]
        segment, offsets = None, None
        if big and len(handles) > 1:
            if self._segments is None:
                self._segments = _SegmentPool()
            self._pump(0)  # take in release notes that arrived after their calls' results
            # Notes still on their way (a worker between its reply and its note, descheduled on a busy
            # machine): wait for them, briefly, so the segment is reused rather than a second one made.
            deadline = time.monotonic() + RELEASE_NOTE_WAIT_S
            is_dead = lambda wid: self._procs[wid].dead is not None  # noqa: E731
            while self._segments.due(is_dead) and time.monotonic() < deadline:
                self._pump(0.001)
            try:
                segment = self._segments.acquire(sum(-(-raws[i].nbytes // 64) * 64 for i in big), is_dead)
            except OSError:  # no /dev/shm (or it is full): every buffer crosses every socket instead
                return [self.call(h, method, *args, **kwargs) for h in handles]
            offsets, offset = {}, 0
            for i in big:
                segment.write(offset, raws[i])
                offsets[i] = offset
                offset += -(-raws[i].nbytes // 64) * 64
        futures = [self._submit(self._procs[h.worker_id], None, (head, raws, segment, offsets)) for h in handles]
        if segment is not None:
            self._segments.hold(segment, futures)
        return futures

    def wait(self, futures, num_returns=1, timeout=None):
        futures = list(futures)
        num_returns = min(num_returns, len(futures))
        deadline = None if timeout is None else time.monotonic() + timeout
        while sum(f.done for f in futures) < num_returns:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._pump(left)
        return base.split_ready(futures, num_returns)

    def get(self, futures, timeout=None):
        return base.get_when_ready(self, futures, timeout)

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
        if self._segments is not None:
            self._segments.close()
        if self._template is not None:
            self._template.close()

    def __del__(self):
        try:
            self.shutdown()
        except Exception:
            pass

    # -- extras used by tests and the benchmark -------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [p.popen.pid for p in self._procs]

    def worker_pid(self, handle):
        return self._procs[handle.worker_id].popen.pid


    # -- internals --------------------------------------------------------------------------
    def _submit(self, proc: _Proc, msg, frame: tuple | None = None) -> MPFuture:
        """Send `msg` (or an already pickled `frame`: head, buffers, segment, offsets) to the worker."""
        fut = MPFuture(proc.worker_id)
        if proc.dead is not None:
            fut._set(False, WorkerDiedError(proc.worker_id, proc.dead))
            return fut
        proc.pending.append(fut)
        try:
            if frame is None:
                send_msg(proc.sock, msg)
            else:
                send_frame(proc.sock, *frame)
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
                    elif msg[0] == "shm":
                        if self._segments is not None:
                            self._segments.note(msg[1], proc.worker_id, msg[2])
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


def _modules_to_preload(worker_cls, args_list) -> list[str]:
    """The worker class's module plus what its optional `preload_modules(*args)` names."""
    modules = []
    if worker_cls.__module__ not in ("__main__", "builtins"):
        modules.append(worker_cls.__module__)
    hook = getattr(worker_cls, "preload_modules", None)
    if hook is not None:
        try:
            modules.extend(hook(*args_list[0]))
        except Exception:
            pass
    return modules
