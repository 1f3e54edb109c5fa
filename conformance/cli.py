"""`unirl conformance`: argument parsing and the entry point of the suite's runner."""
from __future__ import annotations

from unirl.errors import UnirlError


def add_arguments(p) -> None:
    p.add_argument("--framework", default=None, help="comma-separated: torch,tf,jax or adapter import paths")
    p.add_argument("--backend", default=None, help="comma-separated: local,multiprocessing,ray,mpi or import paths")
    p.add_argument("--algo", default="PPO", help="comma-separated algorithms")
    p.add_argument("--quick", action="store_true", help="the quick mode (levels 1-4, short runs)")
    p.add_argument("--json", help="write the report (one record per check and combination) here")


def run(args) -> int:
    raise UnirlError("the conformance suite is not built yet.")
