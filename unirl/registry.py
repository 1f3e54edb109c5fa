"""Algorithm registry: names to import paths, loaded only when asked for."""
from __future__ import annotations

import importlib

from unirl.errors import UnirlError, did_you_mean

ALGORITHMS = {
    "PPO": "unirl.algorithms.ppo:PPO",
}


def get_algorithm_class(name: str):
    """The Algorithm class registered as `name` (or given as "pkg.module:Class")."""
    path = ALGORITHMS.get(name, name if ":" in name else None)
    if path is None:
        raise UnirlError(f"unknown algorithm `{name}`; unirl has {', '.join(sorted(ALGORITHMS))}."
                         + did_you_mean(name, ALGORITHMS))
    mod_name, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise UnirlError(f"cannot load algorithm `{name}`: {e}.") from None
