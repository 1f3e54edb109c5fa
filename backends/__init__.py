"""Execution backends: one protocol (spawn / call / wait / get / shutdown), four implementations.

`get_backend("local" | "multiprocessing" | "ray" | "mpi" | "pkg.module:Class", **options)`.
Only `backends/<name>.py` imports its backend library (ray, mpi4py).
"""
from __future__ import annotations

import importlib

from unirl.backends.base import Backend, Future, WorkerHandle
from unirl.errors import UnirlError, did_you_mean, missing_extra

# name -> (module, library it needs or "", extra that installs it)
BACKENDS = {
    "local": ("unirl.backends.local", "", ""),
    "multiprocessing": ("unirl.backends.multiprocessing", "", ""),
    "ray": ("unirl.backends.ray", "ray", "ray"),
    "mpi": ("unirl.backends.mpi", "mpi4py", "mpi"),
}


def get_backend_class(name: str):
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(mod_name), attr)
        except (ImportError, AttributeError) as e:
            raise UnirlError(f"cannot load backend `{name}`: {e}.") from None
    if name not in BACKENDS:
        raise UnirlError(f"unknown backend `{name}`; choose one of {list(BACKENDS)}." + did_you_mean(name, BACKENDS))
    mod_name, needs, extra = BACKENDS[name]
    if needs:
        try:
            importlib.import_module(needs)
        except ImportError:
            raise missing_extra(needs, extra, f"the `{name}` backend") from None
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name:
            raise UnirlError(f"the `{name}` backend is not available in this version of unirl.") from None
        raise
    return module.Backend


def get_backend(name: str, **options) -> Backend:
    """A started backend by name or import path."""
    return get_backend_class(name)(**options)


__all__ = ["Backend", "Future", "WorkerHandle", "get_backend", "get_backend_class", "BACKENDS"]
