"""Runs on the non-reference backends, recorded in a child command: isolated, time-limited, launched if needed.

The suite records every run on a backend other than local in one child process per backend:

    python -m unirl.cli conformance --run-specs SPECS_IN RECORDS_OUT

so that a backend which hangs or leaves a runtime behind (a Ray cluster, MPI ranks) cannot stall
or pollute the suite: the child runs in its own session and is killed, with everything it
started, when a run takes longer than RUN_TIMEOUT_S. The child writes the records after every
run; the parent reads them as they come (progress) and keeps what was recorded before a hang.

A backend that must start its own processes says so the way `unirl train` learns it: a
`prepare_cli(config, argv)` classmethod that, outside a job, relaunches the command under its
launcher (MPI: mpiexec) and returns the exit code, and inside the job turns the helper
processes into workers and returns None on the driver. The child calls that hook first.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time

from unirl.conformance.runs import RunRecord, RunSpec, record_run

#: Workers the backend protocol checks (backend_checks) spawn at most (the every-worker transfer check: 4).
API_CHECK_WORKERS = 4
#: Seconds one run may take (including its backend's start) before the job counts as hung.
RUN_TIMEOUT_S = 300
#: How the child starts: `unirl.cli` without the current directory at sys.path[0] (what `python -m` would put
#: there), so it imports unirl from where this process did, not from a checkout that happens to be the cwd.
CHILD_ENTRY = "import sys; sys.path.pop(0); from unirl.cli import main; sys.exit(main(sys.argv[1:]))"


def code_fingerprint() -> dict:
    """{module: (real path, SHA-256 of its source)} for every loaded unirl module (unirl.algorithms, .backends, ...
    included). The suite compares its own with each child's: a child must run the code the local runs ran."""
    out = {}
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None)
        if not path or not (name == "unirl" or name.startswith("unirl.")):
            continue
        try:
            with open(path, "rb") as fh:
                out[name] = (os.path.realpath(path), hashlib.sha256(fh.read()).hexdigest())
        except OSError:
            pass
    return out


def code_mismatch(mine: dict, theirs: dict) -> str | None:
    """Why two code fingerprints disagree (modules both loaded, from other files or with other sources), or None."""
    differ = sorted(n for n in set(mine) & set(theirs) if mine[n] != theirs[n])
    if not differ:
        return None
    shown = "; ".join(f"{n}: {mine[n][0]} here, {theirs[n][0]} there"
                      + (" (same path, source edited since this process imported it)" if mine[n][0] == theirs[n][0]
                         else "") for n in differ[:3])
    return (f"the child job ran other unirl code than this process ({len(differ)} module(s) differ: {shown}"
            f"{'; ...' if len(differ) > 3 else ''}); its runs cannot be compared with the local ones")


def record_runs_in_child(backend: str, specs: list[RunSpec], on_record=None,
                         api_checks: bool = False, schedules: dict | None = None,
                         code: dict | None = None) -> tuple[dict, list | None]:
    """Record `specs` (all on `backend`) in one child job, then (if asked) run the backend's level-1 checks there.

    `schedules` maps a replaying spec to the arrival schedule it replays. `code` is this process's
    `code_fingerprint()` from before its own runs (default: now); a child that ran other code fails every run.

    Returns (records by spec, level-1 records or None); a run the job did not record carries the
    reason. `on_record(spec, record)` is called as each record arrives.
    """
    parent_code = code_fingerprint() if code is None else code
    child_code: dict = {}
    with tempfile.TemporaryDirectory(prefix="unirl-conformance-") as tmp:
        spec_path, out_path = os.path.join(tmp, "specs.pkl"), os.path.join(tmp, "records.pkl")
        log_path = os.path.join(tmp, "child.log")
        with open(spec_path, "wb") as fh:
            pickle.dump({"backend": backend, "specs": specs, "api_checks": api_checks,
                         "schedules": dict(schedules or {})}, fh)
        env = dict(os.environ)
        # The child imports what this process can (a plugin found through sys.path, e.g. under pytest).
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        cmd = [sys.executable, "-c", CHILD_ENTRY, "conformance", "--run-specs", spec_path, out_path]
        records: dict = {}
        api: list = []
        failure = None
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True)
            try:
                code, failure = _watch(proc, backend, out_path, log_path, records, api, child_code, on_record)
            except BaseException:  # Ctrl-C, or SIGTERM (the CLI turns it into SystemExit): no job outlives the suite
                _kill_session(proc)
                raise
        _read_records(out_path, records, api, child_code)
    mismatch = code_mismatch(parent_code, child_code)
    if mismatch:
        records = {s: RunRecord(s, error=mismatch) for s in specs}
    for s in specs:
        if s not in records:
            records[s] = RunRecord(s, error=failure or "the child job did not record this run")
            if on_record:
                on_record(s, records[s])
    if api_checks and not api:
        from unirl.conformance.report import FAILED

        api = [dict(level=1, check="api/backend", algo=None, framework=None, backend=backend, status=FAILED,
                    message=failure or "the child job ended before the backend checks ran")]
    return records, (api if api_checks else None)


def _watch(proc, backend, out_path, log_path, records, api, child_code, on_record) -> tuple:
    """Follow a child job until it exits, or kill it once it hangs: (exit code or None, failure message or None)."""
    last_progress = time.monotonic()
    while True:
        code = proc.poll()
        for s in _read_records(out_path, records, api, child_code):
            if on_record:
                on_record(s, records[s])
            last_progress = time.monotonic()
        if code is not None:
            return code, (f"the child job exited with {code}: {_tail(log_path)}" if code != 0 else None)
        if time.monotonic() - last_progress > RUN_TIMEOUT_S:
            _kill_session(proc)
            return None, (f"a run or check on {backend} did not finish within {RUN_TIMEOUT_S} s (hung); the "
                          f"job was stopped. Its last output: {_tail(log_path)}")
        time.sleep(0.25)


def _read_records(path: str, records: dict, api: list, code: dict | None = None) -> list:
    """Load the output file (written whole, then renamed); returns the specs whose records are new."""
    try:
        with open(path, "rb") as fh:
            loaded = pickle.load(fh)
    except (FileNotFoundError, EOFError, pickle.UnpicklingError):
        return []
    new = [s for s in loaded["records"] if s not in records]
    records.update(loaded["records"])
    api[:] = loaded["api"]
    if code is not None:
        code.update(loaded.get("code", {}))
    return new


def _kill_session(proc) -> None:
    """Kill the child and every process it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as fh:
            kept = [ln.rstrip() for ln in fh if ln.strip()]
    except FileNotFoundError:
        return ""
    return "\n".join(kept[-lines:])


@contextlib.contextmanager
def held_open(backend: str):
    """One instance of the backend kept open around a group of runs.

    A backend that starts a runtime on first use (Ray's `ray.init`, about 5 s) leaves it to the
    instance that started it; holding one open lets every run and protocol check of the group reuse
    it. Each run and check still builds its own backend instance and workers.
    """
    from unirl.backends import get_backend

    try:
        keeper = get_backend(backend)
    except Exception:  # the runs themselves will report why the backend does not start
        keeper = None
    try:
        yield
    finally:
        if keeper is not None:
            keeper.shutdown()


def run_specs_command(spec_path: str, out_path: str) -> int:
    """The body of `unirl conformance --run-specs`: launch if the backend needs it, then, on the driver, record the
    runs and run the backend's level-1 checks (last: one of them ends a worker process on purpose)."""
    from unirl.backends import get_backend_class

    with open(spec_path, "rb") as fh:
        job = pickle.load(fh)
    backend, specs = job["backend"], job["specs"]
    cls = get_backend_class(backend)
    prepare = getattr(cls, "prepare_cli", None)
    if prepare is not None:
        from unirl.config import AlgorithmConfig

        # Enough worker processes for the widest run and for the protocol checks, which use up to 4 workers
        # that must not share a process (one of them sleeps while the others answer).
        num_workers = max([s.num_workers for s in specs] + ([API_CHECK_WORKERS] if job["api_checks"] else [1]))
        config = AlgorithmConfig.from_dict({"backend": backend, "num_workers": num_workers, "num_envs_per_worker": 1,
                                            "train_batch_size": num_workers})
        code = prepare(config, sys.argv)
        if code is not None:  # this process launched the job, which has done the work
            return code
    out = {"records": {}, "api": [], "code": {}}

    def save():
        out["code"] = code_fingerprint()
        # written whole to a new file, then renamed: the parent never reads half a file
        with open(out_path + ".tmp", "wb") as fh:
            pickle.dump(out, fh)
        os.replace(out_path + ".tmp", out_path)

    with (held_open(backend) if prepare is None else contextlib.nullcontext()):
        schedules = job.get("schedules", {})
        for s in specs:
            out["records"][s] = record_run(s, schedules.get(s))
            save()
        if job["api_checks"]:
            from unirl.conformance.api_checks import backend_api_checks

            out["api"] = backend_api_checks(backend)
            save()
    return 0
