"""Framework adapters: the only place torch, tensorflow or jax are imported (one module each)."""
from __future__ import annotations

import importlib
import importlib.util

from unirl.errors import UnirlError, did_you_mean, missing_extra

# name -> (module holding the adapter, module it needs, extra that installs it)
FRAMEWORKS = {
    "torch": ("unirl.frameworks.torch", "torch", "torch"),
    "tf": ("unirl.frameworks.tf", "tensorflow", "tf"),
    "jax": ("unirl.frameworks.jax", "jax", "jax"),
    "numpy": ("unirl.frameworks.numpy", "numpy", ""),
}


def get_adapter(name: str, **options):
    """A framework adapter by name ("torch", "tf", "jax") or import path ("pkg.module:Adapter")."""
    if ":" in name:
        mod_name, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(mod_name), attr)(**options)
        except (ImportError, AttributeError) as e:
            raise UnirlError(f"cannot load framework adapter `{name}`: {e}.") from None
    if name not in FRAMEWORKS:
        raise UnirlError(
            f"unknown framework `{name}`; choose one of {[k for k in FRAMEWORKS if k != 'numpy']}."
            + did_you_mean(name, FRAMEWORKS)
        )
    mod_name, needs, extra = FRAMEWORKS[name]
    # Only look for the framework here: the adapter module imports it itself, after setting the
    # environment flags (threads, XLA) that must precede the framework's first import.
    if importlib.util.find_spec(needs) is None:
        raise missing_extra(needs, extra, f"the `{name}` framework")
    return importlib.import_module(mod_name).Adapter(**options)
