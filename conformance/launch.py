"""Runs for backends that need their own process launch (MPI: mpiexec), recorded in a child process.

The child is `python -m unirl.conformance.launch SPECS_IN RECORDS_OUT`, started under the
backend's launcher; it records each run (see runs.record_run) and pickles the records back.
"""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile

from unirl.conformance.runs import RunRecord, RunSpec, record_run

#: Seconds a launched group of runs may take before it counts as hung.
LAUNCH_TIMEOUT_S = 900


def needs_launcher(backend: str) -> bool:
    """Whether runs on this backend must start under a launcher instead of in this process."""
    from unirl.backends import get_backend_class

    return callable(getattr(get_backend_class(backend), "launch_command", None))


def record_runs_in_child(backend: str, specs: list[RunSpec]) -> dict[RunSpec, RunRecord]:
    """Record `specs` in one child process started with the backend's launch command."""
    from unirl.backends import get_backend_class

    cls = get_backend_class(backend)
    most_workers = max(s.num_workers for s in specs)
    with tempfile.TemporaryDirectory(prefix="unirl-conformance-") as tmp:
        spec_path, out_path = os.path.join(tmp, "specs.pkl"), os.path.join(tmp, "records.pkl")
        with open(spec_path, "wb") as fh:
            pickle.dump(specs, fh)
        cmd = list(cls.launch_command(most_workers)) + [sys.executable, "-m", "unirl.conformance.launch",
                                                        spec_path, out_path]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S)
            failure = None if proc.returncode == 0 else \
                f"`{' '.join(cmd[:4])} ...` exited with {proc.returncode}: {_tail(proc.stderr or proc.stdout)}"
        except subprocess.TimeoutExpired:
            failure = f"the launched runs did not finish within {LAUNCH_TIMEOUT_S} s"
        except OSError as e:
            failure = f"could not launch `{cmd[0]}`: {e}"
        records = {}
        if os.path.exists(out_path):
            with open(out_path, "rb") as fh:
                records = pickle.load(fh)
    for s in specs:
        if s not in records:
            records[s] = RunRecord(s, error=failure or "the launched child did not record this run")
    return records


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def main(argv: list[str]) -> int:
    spec_path, out_path = argv
    with open(spec_path, "rb") as fh:
        specs = pickle.load(fh)
    records = {}
    for s in specs:
        records[s] = record_run(s)
        # written after every run, so a crash later still returns what was recorded
        with open(out_path, "wb") as fh:
            pickle.dump(records, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
