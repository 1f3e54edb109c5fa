"""The one loader for things named in a config: a registered name, or an import path "pkg.module:Attr"."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Iterable, Mapping

from unirl.errors import UnirlError, did_you_mean, missing_extra


def load(spec: str, registry: Mapping[str, str], kind: str, *,
         requires: Mapping[str, tuple[str, str]] | None = None, listed: Iterable[str] | None = None):
    """The object `spec` names: a key of `registry` (whose value is "module:Attr") or "module:Attr" itself.

    `kind` names what is loaded in errors ("algorithm", "backend", ...). `requires` maps a
    registered name to (the package it needs, the extra that installs it); the package is only
    looked for, not imported, so the registered module still imports it first (framework adapters
    set environment flags before that). `listed` are the names an unknown-name error offers
    (default: all of `registry`).
    """
    if ":" in spec:
        return import_attr(spec, kind, spec)
    if spec not in registry:
        names = list(registry if listed is None else listed)
        raise UnirlError(f"unknown {kind} `{spec}`; unirl has {', '.join(names)}." + did_you_mean(spec, names))
    package, extra = (requires or {}).get(spec, ("", ""))
    if package and importlib.util.find_spec(package) is None:
        raise missing_extra(package, extra, f"the `{spec}` {kind}")
    mod_name, _, attr = registry[spec].partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name != mod_name:
            raise  # a registered module failing inside is a bug in unirl: keep its traceback
        raise UnirlError(f"the `{spec}` {kind} is not available in this version of unirl.") from None
    return getattr(module, attr)


def import_module(name: str, kind: str, spec: str):
    """The module `name`, or a one-sentence error about loading the `kind` `spec`."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise UnirlError(f"cannot load {kind} `{spec}`: {e}.") from None


def import_attr(path: str, kind: str, spec: str):
    """The attribute `path` ("module:Attr") names, or a one-sentence error about loading the `kind` `spec`."""
    mod_name, _, attr = path.partition(":")
    module = import_module(mod_name, kind, spec)
    try:
        return getattr(module, attr)
    except AttributeError as e:
        raise UnirlError(f"cannot load {kind} `{spec}`: {e}.") from None
