"""The adapter protocol every framework implements, and the learn step written once on top of it."""
from __future__ import annotations

from typing import Callable

import os

import numpy as np

from unirl import kernels

#: XLA flags every XLA-based adapter (TF, JAX) sets before its framework starts (through
#: `unirl.kernels.pin`, which sets them with the other kernel pins). XLA_FLAGS is read once per
#: process by each framework's XLA, so TF and JAX in one process must ask for the same:
#: single-threaded Eigen kernels, whose sums do not depend on the thread pool, and XLA's
#: generated code capped at AVX2, the same on every x86 CPU since 2013.
XLA_CPU_FLAGS = kernels.XLA_FLAGS

#: Rows per block in every adapter's matmul (torch, TF, JAX): BLAS and XLA pick kernels (and so
#: the order of a row's sums) by the number of rows, and a GEMM's edge tiles may use other
#: micro-kernels than its full ones. A product done in fixed blocks of this many rows (the last
#: one zero-padded, one-column products given a second column) runs every row through the same
#: [64, k] x [k, n] problem, so a row has the same bits whatever the batch it arrives in and
#: wherever it sits in it (tests/test_row_invariance.py checks 1..600 rows and shifted rows).
MATMUL_ROW_BLOCK = 64


def add_xla_flags(flags=XLA_CPU_FLAGS) -> None:
    """Append `flags` to XLA_FLAGS unless a value for them is already there (call before the import)."""
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in flags if f.split("=")[0] not in current]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current] + missing).strip()


class FrameworkAdapter:
    """What an algorithm needs from a deep-learning framework.

    An adapter supplies `ops` (see unirl.ops.OPS_NAMES), conversions to and from NumPy,
    `value_and_grad` and `compile`. Everything else (models, losses, the optimizer) is
    written once on these.
    """

    name = "base"
    ops = None
    #: Policy's compiled acting functions take the flat parameter vector and slice it inside,
    #: instead of taking one input per named parameter (pays off where a compiled call costs
    #: per input, as in TF; eager frameworks keep named views made once per weight update).
    flat_params_for_acting = False
    #: `scan` runs a loop of steps as one compiled call (JAX: lax.scan inside jit), so the policy
    #: hands it a whole run of minibatches; elsewhere the policy loops over them in Python.
    compiled_loops = False
    #: `compile` traces (JAX, TF): worth sharing a compiled function between policies built from
    #: the same ingredients (unirl.policy); eager adapters' compile is free.
    traces = False

    def __init__(self, deterministic: bool = True, num_threads: int = 1):
        self.deterministic = deterministic
        self.num_threads = num_threads

    def tensor(self, x: np.ndarray):
        """A framework array holding `x` (dtype kept)."""
        raise NotImplementedError

    def numpy(self, x) -> np.ndarray:
        raise NotImplementedError

    def call_input(self, x: np.ndarray):
        """`x` made ready to pass to a compiled function (where the framework converts faster itself)."""
        return self.tensor(x)

    def value_and_grad(self, fn: Callable) -> Callable:
        """fn(x, *args) -> (scalar, aux)  becomes  g(x, *args) -> ((scalar, aux), d scalar / d x)."""
        raise NotImplementedError

    def compile(self, fn: Callable) -> Callable:
        """A compiled version of a pure function of tensors (may be the function itself)."""
        raise NotImplementedError

    def compile_options(self) -> tuple:
        """Everything besides the function that decides what `compile` makes of it (a shared
        compiled function is reused only under equal options)."""
        return (self.deterministic, self.num_threads)

    def scan(self, body: Callable, init, xs):
        """(final carry, stacked outputs) of body(carry, x) -> (carry, out) over the leading axis of
        `xs` (a dict of arrays), inside a compiled function; only where `compiled_loops`."""
        raise NotImplementedError

    def trace_count(self, compiled: Callable) -> int:
        """How many times `compiled` has been traced or compiled (0 for eager frameworks)."""
        return 0

    def tree_numpy(self, tree):
        if isinstance(tree, dict):
            return {k: self.tree_numpy(v) for k, v in tree.items()}
        if isinstance(tree, tuple) and hasattr(tree, "_fields"):
            return type(tree)(*(self.tree_numpy(v) for v in tree))
        if isinstance(tree, (tuple, list)):
            return type(tree)(self.tree_numpy(v) for v in tree)
        return self.numpy(tree)

    def tree_tensor(self, tree):
        if isinstance(tree, dict):
            return {k: self.tree_tensor(v) for k, v in tree.items()}
        if isinstance(tree, tuple) and hasattr(tree, "_fields"):
            return type(tree)(*(self.tree_tensor(v) for v in tree))
        if isinstance(tree, (tuple, list)):
            return type(tree)(self.tree_tensor(v) for v in tree)
        return self.tensor(np.asarray(tree))
