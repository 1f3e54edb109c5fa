"""Execution backends: one protocol (spawn / call / wait / get / shutdown), four implementations.

`get_backend("local" | "multiprocessing" | "ray" | "mpi" | "pkg.module:Class", **options)`.
Only `backends/<name>.py` imports its backend library (ray, mpi4py).
"""
from __future__ import annotations

from unirl.backends.base import Backend, Future, WorkerHandle
from unirl.loading import load

BACKENDS = {
    "local": "unirl.backends.local:Backend",
    "multiprocessing": "unirl.backends.multiprocessing:Backend",
    "ray": "unirl.backends.ray:Backend",
    "mpi": "unirl.backends.mpi:Backend",
}
# name -> (library it needs, extra that installs it)
REQUIRES = {"ray": ("ray", "ray"), "mpi": ("mpi4py", "mpi")}


def get_backend_class(name: str):
    """The Backend class registered as `name` (or given as "pkg.module:Class")."""
    return load(name, BACKENDS, "backend", requires=REQUIRES)


def get_backend(name: str, **options) -> Backend:
    """A started backend by name or import path."""
    return get_backend_class(name)(**options)


__all__ = ["Backend", "Future", "WorkerHandle", "get_backend", "get_backend_class", "BACKENDS"]
