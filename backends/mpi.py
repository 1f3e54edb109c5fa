"""The MPI backend: rank 0 drives, ranks 1..n-1 host the workers; messages are mpi4py pkl5 buffer sends.

How it starts:

- `unirl train --backend=mpi --config='{"num_workers": 4}'` outside an MPI job: `prepare_cli`
  relaunches the same command as `mpiexec -n 5 python -m unirl.cli ...` (one rank per worker plus
  the driver), says so, and returns mpiexec's exit code. A missing mpiexec is a UnirlError.
- Inside `mpiexec -n 5 unirl train --backend=mpi ...` (or `mpiexec -n 5 python script.py` where
  the script builds an algorithm with `backend="mpi"`): ranks > 0 become worker hosts (in
  `prepare_cli`, or inside the Backend constructor for scripts, which ends those processes when the
  driver releases them), rank 0 goes on as the driver. Workers are placed round-robin over the
  ranks, so a job with fewer ranks than workers still runs (workers sharing a rank run in turn).
- `unirl.build("PPO", {"backend": "mpi"})` outside an MPI job raises a UnirlError that says how to
  launch. (MPI_Comm_spawn from a singleton works with MPICH, but a worker that dies then takes
  the driver down with it through the process manager; a launched job is the dependable path.)

Messages: `mpi4py.util.pkl5` pickles with protocol 5 and sends every out-of-band buffer (NumPy
arrays) as its own MPI message, so arrays move as buffers. All sends are non-blocking (`isend`),
so a large task and a large result crossing each other never deadlock. Idle ranks poll with a
short spin then a sleeping backoff instead of MPI's busy-wait, so waiting ranks leave the cores
to the ranks that work.

Dead workers: a worker rank that ends is noticed by the driver through its pid (ranks report
pid and host at start; ranks on other hosts cannot be watched this way) and every pending call
on it raises `WorkerDiedError`. When unirl launches mpiexec (Hydra) it passes
`-disable-auto-cleanup`, so one dead rank does not take the job down before the driver can say
which worker died; under a user's own `mpiexec` without it, the process manager ends the whole
job and reports the failed rank. After a rank died, the driver leaves with `os._exit` at exit,
since MPI_Finalize would wait on the dead rank forever.

Heartbeats (work across hosts, where no pid can be watched): rank 0 sends every worker rank a
one-byte message (tag TAG_BEAT) every HEARTBEAT_S from a thread of its own, so a driver busy
learning still beats. A worker rank's own thread takes them in; one that hears nothing from rank 0
for `UNIRL_MPI_HEARTBEAT_TIMEOUT` seconds (default 30; 0: off) says so and ends itself: when the
driver or the launcher goes away by any means, no orphan rank keeps a node busy. One direction
only, and rank 0 stops beating before it releases the ranks: MPICH's MPI_Finalize hangs on a
message left unreceived. Needs MPI_THREAD_MULTIPLE (mpi4py asks for it; MPICH and Open MPI give
it); without it, ranks fall back to the pid and parent watch.

Worker log records travel to rank 0 as messages and are re-emitted there as `[worker N] ...`.
"""
from __future__ import annotations

import atexit
import collections
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time

import cloudpickle

from unirl.backends import base
from unirl.errors import UnirlError, WorkerDiedError

TAG_TASK = 71
TAG_REPLY = 72
TAG_BEAT = 73
HEARTBEAT_S = 1.0  # seconds between heartbeats (rank 0 -> worker ranks)
NAP_MAX = 0.001  # longest sleep of an idle poll loop: bounds the added latency, keeps idle ranks near 0% CPU
_JOB_ENV_VARS = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "HYDI_CONTROL_FD")


def _mpi():
    from mpi4py import MPI  # initialises MPI: only once we know we are in a job

    return MPI


def in_mpi_job() -> bool:
    """True when this process was started by mpiexec (or another MPI process manager)."""
    return any(v in os.environ for v in _JOB_ENV_VARS)


def find_mpiexec() -> str:
    """The mpiexec to launch with: on PATH, or beside this Python (the `mpich` wheel puts it there)."""
    found = shutil.which("mpiexec")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.access(beside, os.X_OK):
        return beside
    raise UnirlError("the MPI backend needs `mpiexec`, which was not found on PATH; install an MPI "
                     "(e.g. `pip install 'unirl[mpi]'`, which brings MPICH) or add its bin folder to PATH.")


def launch_command(mpiexec: str, num_ranks: int, argv: list[str]) -> list[str]:
    """`mpiexec -n N ...`; with Hydra (MPICH) also `-disable-auto-cleanup` so the driver can report a dead worker."""
    cmd = [mpiexec]
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    if "HYDRA" in version:
        cmd.append("-disable-auto-cleanup")
    return cmd + ["-n", str(num_ranks)] + list(argv)


def _die_with_parent() -> None:
    """preexec_fn: the kernel SIGKILLs this child (mpiexec) when the launching process dies, however it dies."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    os.setsid()  # its own process group: a terminal's Ctrl-C reaches only the launcher, which relays it


def _shm_files() -> set[str]:
    try:
        return {f for f in os.listdir("/dev/shm") if f.startswith("mpich")}
    except OSError:
        return set()


def _mapped_shm() -> set[str]:
    """Names of /dev/shm files some process still maps (so they are not ours to remove)."""
    used = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    i = line.find("/dev/shm/")
                    if i >= 0:
                        used.add(line[i + 9:].split()[0])
        except OSError:
            pass
    return used


def clean_shm(before: set[str]) -> list[str]:
    """Remove the MPICH shared-memory files this job left in /dev/shm (new since `before`, mapped by no process)."""
    new = _shm_files() - before
    if not new:
        return []
    used = _mapped_shm()
    removed = []
    for name in sorted(new - used):
        try:
            os.unlink(os.path.join("/dev/shm", name))
            removed.append(name)
        except OSError:
            pass
    return removed


def run_launched(cmd: list[str], env: dict | None = None) -> int:
    """Run mpiexec to completion as the job's launcher.

    - Ctrl-C / SIGTERM: rank 0 is asked (through a stop file it watches) to finish its iteration,
      checkpoint and exit; a second Ctrl-C (or SIGTERM) kills the job at once.
    - If this process dies (even by SIGKILL), the kernel kills mpiexec (PR_SET_PDEATHSIG), and the
      ranks, which watch this process's pid and their parent, end themselves within a second.
    - Afterwards MPICH's /dev/shm files that the job left behind are removed.
    """
    import tempfile

    env = dict(os.environ if env is None else env)
    fd, stop_file = tempfile.mkstemp(prefix="unirl-stop-")
    os.close(fd)
    os.unlink(stop_file)
    env.update({"UNIRL_LAUNCHER_PID": str(os.getpid()), "UNIRL_LAUNCHER_HOST": socket.gethostname(),
                "UNIRL_STOP_FILE": stop_file})
    before = _shm_files()
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
    signals = []

    def relay(signum, frame):
        signals.append(signum)
        if len(signals) == 1:
            with open(stop_file, "w") as f:
                f.write(str(int(signum)))
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    old = {s: signal.signal(s, relay) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                code = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
        if len(signals) > 1:
            print(f"unirl: stopped at once by a second {signal.Signals(signals[-1]).name}; no checkpoint written",
                  file=sys.stderr, flush=True)
            return 128 + int(signals[-1])
        return code
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        try:
            os.unlink(stop_file)
        except OSError:
            pass
        time.sleep(0.2)
        clean_shm(before)


def start_watchdog() -> None:
    """In a rank: end this process when the launcher (`UNIRL_LAUNCHER_PID`, same host) or this rank's
    parent (the process manager's proxy) is gone; on rank 0, turn the launcher's stop file into the
    signal it stands for (the CLI then finishes the iteration and checkpoints)."""
    import threading

    launcher = os.environ.get("UNIRL_LAUNCHER_PID")
    same_host = os.environ.get("UNIRL_LAUNCHER_HOST") == socket.gethostname()
    stop_file = os.environ.get("UNIRL_STOP_FILE")
    parent = os.getppid()
    rank0 = os.environ.get("PMI_RANK", os.environ.get("PMIX_RANK", "")) == "0"

    def watch():
        delivered = False
        while True:
            time.sleep(0.25)
            if (launcher and same_host and not base.pid_alive(int(launcher))) or os.getppid() != parent:
                os._exit(1)  # the job lost its launcher: no orphan ranks
            if rank0 and stop_file and not delivered and os.path.exists(stop_file):
                try:
                    with open(stop_file) as f:
                        signum = int(f.read().strip() or signal.SIGINT)
                except (OSError, ValueError):
                    continue
                delivered = True
                os.kill(os.getpid(), signum)

    threading.Thread(target=watch, daemon=True, name="unirl-mpi-watchdog").start()


def heartbeat_timeout() -> float:
    """Seconds of silence after which a rank counts its peer as gone (`UNIRL_MPI_HEARTBEAT_TIMEOUT`, default
    30; 0 turns heartbeats off)."""
    try:
        value = float(os.environ.get("UNIRL_MPI_HEARTBEAT_TIMEOUT", "30"))
    except ValueError:
        return 30.0
    return value if value <= 0 else max(2 * HEARTBEAT_S, value)


class _Heartbeat:
    """A thread that sends a one-byte message to ranks `send_to` every HEARTBEAT_S, or takes in those of
    ranks `listen_to` and calls `on_silent(rank, seconds)` (from the thread) for one not heard from for
    heartbeat_timeout(). One direction only (rank 0 -> worker ranks): the sender stops first, so no beat
    is left unreceived when the ranks finalize (MPICH then waits forever)."""

    _BYTE = bytearray(1)  # never written: what every beat sends

    def __init__(self, send_to=(), listen_to=(), on_silent=None):
        import threading

        MPI = _mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.timeout = heartbeat_timeout()
        self.enabled = MPI.Query_thread() == MPI.THREAD_MULTIPLE and self.timeout > 0
        self.send_to = [int(p) for p in send_to]
        self.last = {int(p): time.monotonic() for p in listen_to}
        self.on_silent = on_silent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="unirl-mpi-heartbeat")
        if self.enabled and (self.send_to or self.last):
            self._thread.start()

    def _drain(self, now) -> None:
        MPI = self.MPI
        status = MPI.Status()
        while True:
            msg = self.comm.Improbe(MPI.ANY_SOURCE, TAG_BEAT, status)
            if msg is None:
                return
            msg.Recv([bytearray(1), MPI.BYTE])
            if status.Get_source() in self.last:
                self.last[status.Get_source()] = now

    def _run(self):
        MPI = self.MPI
        sends = []
        while not self._stop.is_set():
            now = time.monotonic()
            sends = [r for r in sends if not r.Test()]
            for p in self.send_to:
                sends.append(self.comm.Isend([self._BYTE, MPI.BYTE], p, TAG_BEAT))
            if self.last:
                self._drain(now)
                for p, t in list(self.last.items()):
                    if now - t > self.timeout:
                        self.last.pop(p, None)
                        self.on_silent(p, now - t)
            self._stop.wait(HEARTBEAT_S)
        for r in sends:  # one-byte sends complete at once (eager); leave none pending at MPI_Finalize
            r.Wait()

    def stop(self) -> None:
        """Stop beating (the sender) or listening; a listener takes in the beats still on their way."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=5 * HEARTBEAT_S)
        if self.enabled and self.last:
            deadline = time.monotonic() + 0.2
            while time.monotonic() < deadline:
                self._drain(time.monotonic())
                time.sleep(0.01)


class _Backoff:
    """Spin briefly after activity (low latency), then sleep longer and longer, up to 1 ms (no busy cores)."""

    def __init__(self):
        self.last = time.monotonic()
        self.nap = 0.0

    def active(self):
        self.last = time.monotonic()
        self.nap = 0.0

    def pause(self):
        if time.monotonic() - self.last < 0.0005:
            os.sched_yield()
            return
        self.nap = min(NAP_MAX, max(0.00002, self.nap * 2))
        time.sleep(self.nap)


# -- worker ranks -------------------------------------------------------------------------------

def serve() -> None:
    """Main loop of a worker rank: host workers for rank 0 until it says `exit`."""
    from mpi4py.util import pkl5

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    comm = pkl5.Intracomm(_mpi().COMM_WORLD)
    sends: list = []
    workers: dict = {}
    current = [-1]

    def send(obj):
        sends.append(comm.isend(obj, 0, TAG_REPLY))

    forwarder = base.install_log_forwarder(lambda d: send(("log", d)), 30)
    backoff = _Backoff()

    def driver_gone(rank, seconds):
        print(f"unirl: MPI rank {comm.Get_rank()} on {socket.gethostname()}: no heartbeat from the driver "
              f"(rank 0) for {seconds:.0f} s; ending this rank (no orphans)", file=sys.stderr, flush=True)
        os._exit(1)

    heartbeat = _Heartbeat(listen_to=[0], on_silent=driver_gone)
    while True:
        msg = comm.improbe(0, TAG_TASK)
        if msg is None:
            if sends:
                sends[:] = [r for r in sends if not r.test()[0]]
            backoff.pause()
            continue
        backoff.active()
        obj = msg.recv()
        kind = obj[0]
        if kind == "call":
            _, key, method, args, kwargs = obj
            forwarder.worker_id = current[0] = key[1]
            send(("r", key) + base.run_task(workers.get(key), key[1], method, args, kwargs))
        elif kind == "callb":  # a broadcast: arguments pickled once by the driver, buffers sent as they are
            _, key, method, head, buffers = obj
            forwarder.worker_id = current[0] = key[1]
            args, kwargs = pickle.loads(head, buffers=buffers)
            send(("r", key) + base.run_task(workers.get(key), key[1], method, args, kwargs))
        elif kind == "init":
            _, key, cls_bytes, args, level = obj
            forwarder.worker_id = key[1]
            forwarder.setLevel(level)
            import logging

            logging.getLogger().setLevel(level)
            ok, value = base.build_worker(cloudpickle.loads(cls_bytes), args, key[1])
            if ok:
                workers[key] = value
            send(("r", key, ok, None if ok else value))
        elif kind == "close":
            _, key = obj
            close = getattr(workers.pop(key, None), "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    pass
            send(("r", key, True, None))
        elif kind == "hello":
            send(("hello", comm.Get_rank(), os.getpid(), socket.gethostname()))
        elif kind == "exit":
            clean = obj[1]
            break
    heartbeat.stop()
    for r in sends:
        r.wait()
    return clean


# -- the driver (rank 0) ------------------------------------------------------------------------

MPIFuture = base.PendingFuture


class _Driver:
    """Rank 0's view of the job: the worker ranks, their pids, and the routing of replies to futures."""

    _instance: "_Driver | None" = None

    @classmethod
    def get(cls) -> "_Driver":
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def __init__(self):
        from mpi4py.util import pkl5

        MPI = _mpi()
        self.MPI = MPI
        self.comm = pkl5.Intracomm(MPI.COMM_WORLD)
        self.size = MPI.COMM_WORLD.Get_size()
        self.host = socket.gethostname()
        self.sends: list = []
        self.routes: dict = {}  # key -> deque of futures, in call order
        self.key_rank: dict = {}
        self.dead: dict[int, str] = {}
        self.serial = 0
        self.released = False
        self.backoff = _Backoff()
        self.last_check = 0.0
        self.ranks: dict[int, tuple[int, str]] = {}
        for r in range(1, self.size):
            self._send(r, ("hello",))
        while len(self.ranks) < self.size - 1:
            self.pump(None, until=lambda: len(self.ranks) == self.size - 1)
        self.heartbeat = _Heartbeat(send_to=range(1, self.size))
        atexit.register(self.release)

    def live_ranks(self) -> list[int]:
        return [r for r in range(1, self.size) if r not in self.dead]

    def _send(self, rank, obj):
        self.sends.append(self.comm.isend(obj, rank, TAG_TASK))

    def submit(self, key, rank, obj) -> MPIFuture:
        fut = MPIFuture(key[1])
        if rank in self.dead:
            fut._set(False, WorkerDiedError(key[1], self.dead[rank]))
            return fut
        self.routes.setdefault(key, collections.deque()).append(fut)
        self._send(rank, obj)
        return fut

    def pump(self, timeout, until) -> None:
        """Take in replies until `until()` holds or `timeout` seconds pass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not until():
            msg = self.comm.improbe(self.MPI.ANY_SOURCE, TAG_REPLY)
            if msg is not None:
                self.backoff.active()
                self._dispatch(msg.recv())
                continue
            if self.sends:
                self.sends[:] = [r for r in self.sends if not r.test()[0]]
            now = time.monotonic()
            if now - self.last_check > 0.1:
                self.last_check = now
                self._check_ranks()
            if deadline is not None and now >= deadline:
                return
            self.backoff.pause()

    def _dispatch(self, obj):
        kind = obj[0]
        if kind == "r":
            _, key, ok, payload = obj
            q = self.routes.get(key)
            if q:
                q.popleft()._set(ok, payload if ok else base.task_error(key[1], payload))
        elif kind == "log":
            base.replay_log(obj[1])
        elif kind == "hello":
            self.ranks[obj[1]] = (obj[2], obj[3])

    def _check_ranks(self):
        for r, (pid, host) in list(self.ranks.items()):
            if r in self.dead:
                continue
            if host == self.host and not base.pid_alive(pid):
                self.dead[r] = f"its MPI rank {r} (pid {pid}) ended without answering"
            if r in self.dead:
                for key, q in self.routes.items():
                    if self.key_rank.get(key) == r:
                        while q:
                            q.popleft()._set(False, WorkerDiedError(key[1], self.dead[r]))

    def release(self) -> None:
        """Tell every worker rank to exit (at the end of the driver's process)."""
        if self.released:
            return
        self.released = True
        heartbeat = getattr(self, "heartbeat", None)
        if heartbeat is not None:
            heartbeat.stop()
        for r in self.live_ranks():
            self._send(r, ("exit", not self.dead))
        deadline = time.monotonic() + 10
        while self.sends and time.monotonic() < deadline:
            self.sends[:] = [r for r in self.sends if not r.test()[0]]
            time.sleep(0.001)
        if self.dead:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)


def _end_worker_rank(clean: bool) -> int:
    """After serving: end normally (MPI_Finalize needs every rank), or at once when a rank died (it would hang)."""
    if not clean:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    sys.exit(0)


class Backend(base.Backend):
    """Workers on the ranks of the MPI job this process belongs to (see the module docstring)."""

    name = "mpi"
    processes_end_with_job = True

    def __init__(self, **_ignored):
        if not in_mpi_job() or _mpi().COMM_WORLD.Get_size() < 2:
            raise UnirlError(
                "the MPI backend runs inside an MPI job with at least 2 ranks: use `unirl train --backend=mpi` "
                "(it starts mpiexec for you), or start your script as `mpiexec -n <num_workers + 1> python "
                "script.py` (rank 0 drives, the other ranks host workers).")
        if _mpi().COMM_WORLD.Get_rank() != 0:
            # A script run on every rank: the other ranks serve workers here and end when rank 0 is done.
            _end_worker_rank(serve())
        self.driver = _Driver.get()
        self.driver.serial += 1
        self.serial = self.driver.serial
        self._workers: list[tuple] = []  # (key, rank)
        self._closed = False

    @classmethod
    def prepare_cli(cls, config, argv):
        """Relaunch `unirl train` under mpiexec, or, inside a job, turn ranks > 0 into worker hosts."""
        if in_mpi_job():
            start_watchdog()
            if _mpi().COMM_WORLD.Get_rank() > 0:
                return _end_worker_rank(serve())
            return None
        mpiexec = find_mpiexec()
        n = config.num_workers + 1
        # Not `python -m unirl.cli`: that puts the current directory first on sys.path, and a folder
        # named `unirl` there would shadow the installed package.
        entry = "import sys; sys.path.pop(0); from unirl.cli import main; sys.exit(main(sys.argv[1:]))"
        cmd = launch_command(mpiexec, n, [sys.executable, "-c", entry, *argv[1:]])
        print(f"unirl: starting {n} MPI ranks (rank 0 drives, {n - 1} host workers): {' '.join(cmd)}", flush=True)
        env = dict(os.environ)
        env.update(base.worker_env(config.num_threads))
        return run_launched(cmd, env)

    def spawn(self, worker_cls, args_list):
        ranks = self.driver.live_ranks()
        if not ranks:
            raise UnirlError("the MPI job has no live worker ranks left; start it with more ranks.")
        cls_bytes = cloudpickle.dumps(worker_cls)
        level = base.driver_log_level()
        futures, handles = [], []
        for args in args_list:
            wid = len(self._workers)
            rank = ranks[wid % len(ranks)]
            key = (self.serial, wid)
            self._workers.append((key, rank))
            self.driver.key_rank[key] = rank
            futures.append(self.driver.submit(key, rank, ("init", key, cls_bytes, tuple(args), level)))
            handles.append(base.WorkerHandle(wid))
        self.get(futures)
        return handles

    def call(self, handle, method, *args, **kwargs):
        key, rank = self._workers[handle.worker_id]
        return self.driver.submit(key, rank, ("call", key, method, args, kwargs))

    def broadcast(self, handles, method, *args, **kwargs):
        """One serialization of the arguments for every worker; each rank receives the arrays as raw buffers."""
        handles = list(handles)
        if len(handles) < 2:
            return [self.call(h, method, *args, **kwargs) for h in handles]
        buffers = []
        head = pickle.dumps((args, kwargs), protocol=5, buffer_callback=buffers.append)
        futures = []
        for h in handles:
            key, rank = self._workers[h.worker_id]
            futures.append(self.driver.submit(key, rank, ("callb", key, method, head, buffers)))
        return futures

    def wait(self, futures, num_returns=1, timeout=None):
        futures = list(futures)
        k = min(num_returns, len(futures))
        self.driver.pump(timeout, until=lambda: sum(f.done for f in futures) >= k)
        return base.split_ready(futures, k)

    def get(self, futures, timeout=None):
        return base.get_when_ready(self, futures, timeout)

    def shutdown(self):
        if self._closed:
            return
        self._closed = True
        closes = [self.driver.submit(key, rank, ("close", key)) for key, rank in self._workers]
        self.wait(closes, len(closes), timeout=10.0)
        for key, _ in self._workers:
            self.driver.routes.pop(key, None)
            self.driver.key_rank.pop(key, None)

    # -- extras -------------------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        return [self.driver.ranks[rank][0] for _, rank in self._workers]

    def worker_pid(self, handle):
        pid, host = self.driver.ranks[self._workers[handle.worker_id][1]]
        return pid if host == self.driver.host else None
