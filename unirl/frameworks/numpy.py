"""A NumPy adapter for acting and evaluation only (no autodiff): the reference the others are checked against."""
from __future__ import annotations

import numpy as np

from unirl.frameworks.base import FrameworkAdapter
from unirl.ops import numpy_ops


class Adapter(FrameworkAdapter):
    name = "numpy"
    ops = numpy_ops

    def tensor(self, x):
        return np.asarray(x)

    def numpy(self, x):
        return np.asarray(x)

    def compile(self, fn):
        return fn

    def value_and_grad(self, fn):
        from unirl.errors import UnirlError

        raise UnirlError("the `numpy` framework has no autodiff: it acts and evaluates only; learn with torch, tf "
                         "or jax (e.g. --framework torch).")
