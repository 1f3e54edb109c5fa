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


def check_backend_options(cls, name: str, options: dict) -> None:
    """Refuse options the backend's constructor does not take (a `**_ignored` catch-all does not count),
    with the nearest valid name."""
    import inspect

    from unirl.errors import UnirlError, did_you_mean

    try:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return
    if any(p.kind is p.VAR_KEYWORD and not p.name.startswith("_") for p in params):
        return  # the backend takes any keyword: it checks them itself
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
             and not p.name.startswith("_")]
    for key in options:
        if key not in valid:
            raise UnirlError(f"unknown backend option `{key}` for the `{name}` backend." + did_you_mean(key, valid)
                             + (f" It takes: {', '.join(valid)}." if valid else " It takes no options."))


def get_backend(name: str, **options) -> Backend:
    """A started backend by name or import path; an option it does not take is an error."""
    cls = get_backend_class(name)
    check_backend_options(cls, name, options)
    return cls(**options)


__all__ = ["Backend", "Future", "WorkerHandle", "get_backend", "get_backend_class", "BACKENDS"]
