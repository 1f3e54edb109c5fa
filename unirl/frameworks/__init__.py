"""Framework adapters: the only place torch, tensorflow or jax are imported (one module each)."""
from __future__ import annotations

from unirl.loading import load

# name -> (module holding the adapter, module it needs, extra that installs it)
FRAMEWORKS = {
    "torch": ("unirl.frameworks.torch", "torch", "torch"),
    "tf": ("unirl.frameworks.tf", "tensorflow", "tf"),
    "jax": ("unirl.frameworks.jax", "jax", "jax"),
    "numpy": ("unirl.frameworks.numpy", "numpy", ""),
}


def get_adapter(name: str, **options):
    """A framework adapter by name ("torch", "tf", "jax") or import path ("pkg.module:Adapter")."""
    # The registered package is only looked for here: the adapter module imports it itself, after
    # setting the environment flags (threads, XLA) that must precede the framework's first import.
    adapter_cls = load(name, {n: f"{mod}:Adapter" for n, (mod, _, _) in FRAMEWORKS.items()}, "framework",
                       requires={n: (needs, extra) for n, (_, needs, extra) in FRAMEWORKS.items()},
                       listed=[n for n in FRAMEWORKS if n != "numpy"])
    return adapter_cls(**options)
