"""The neutral op set that models, losses and optimizers are written against, and its NumPy version.

Every framework adapter supplies an object with these methods (see `OPS_NAMES`); arithmetic
(+, -, *, /, **, unary -) and basic slicing (`x[a:b]`) use the tensors' own operators, which
torch, TensorFlow and JAX all support. `NumpyOps` is the reference the adapters are tested
against; it has no autodiff.
"""
from __future__ import annotations

import numpy as np

OPS_NAMES = (
    "constant", "matmul", "tanh", "relu", "exp", "log", "sqrt", "square", "abs",
    "log_softmax", "softmax", "sum", "mean", "maximum", "minimum", "clip", "where",
    "one_hot", "take_along_last", "stop_gradient", "reshape", "concat", "zeros_like",
    "argmax", "cast_float", "sigmoid", "take_rows", "split",
)


def _log_softmax_np(x, axis=-1):
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


class NumpyOps:
    """The neutral ops on NumPy arrays (float32 in, float32 out)."""

    name = "numpy"

    def constant(self, x, dtype="float32"):
        return np.asarray(x, dtype=dtype)

    def matmul(self, a, b):
        return a @ b

    def tanh(self, x):
        return np.tanh(x)

    def relu(self, x):
        return np.maximum(x, 0)

    def sigmoid(self, x):
        return (1 / (1 + np.exp(-x))).astype(x.dtype)

    def exp(self, x):
        return np.exp(x)

    def log(self, x):
        return np.log(x)

    def sqrt(self, x):
        return np.sqrt(x)

    def square(self, x):
        return np.square(x)

    def abs(self, x):
        return np.abs(x)

    def log_softmax(self, x, axis=-1):
        return _log_softmax_np(x, axis)

    def softmax(self, x, axis=-1):
        return np.exp(_log_softmax_np(x, axis))

    def sum(self, x, axis=None):
        return np.sum(x, axis=axis)

    def mean(self, x, axis=None):
        return np.mean(x, axis=axis)

    def maximum(self, a, b):
        return np.maximum(a, b)

    def minimum(self, a, b):
        return np.minimum(a, b)

    def clip(self, x, lo, hi):
        return np.clip(x, lo, hi)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def one_hot(self, idx, n):
        return np.eye(n, dtype=np.float32)[np.asarray(idx)]

    def take_along_last(self, x, idx):
        return np.take_along_axis(x, np.asarray(idx)[..., None], axis=-1)[..., 0]

    def stop_gradient(self, x):
        return x

    def reshape(self, x, shape):
        return np.reshape(x, shape)

    def concat(self, xs, axis=0):
        return np.concatenate(xs, axis=axis)

    def zeros_like(self, x):
        return np.zeros_like(x)

    def argmax(self, x, axis=-1):
        return np.argmax(x, axis=axis)

    def cast_float(self, x):
        return np.asarray(x, dtype=np.float32)

    def take_rows(self, x, idx):
        return x[idx]

    def split(self, x, sizes):
        """Consecutive pieces of a 1-D array with the given sizes."""
        return np.split(x, np.cumsum(sizes)[:-1])


numpy_ops = NumpyOps()
