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
    "argmax", "cast_float", "sigmoid", "take_rows", "split", "conv2d",
)


def conv_output_size(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int, int]:
    """(output size, padding before, padding after) along one spatial axis (TensorFlow's convention)."""
    if padding == "VALID":
        return (size - kernel) // stride + 1, 0, 0
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return out, total // 2, total - total // 2
    raise ValueError(f"conv2d padding must be 'VALID' or 'SAME', got {padding!r}")


def conv2d_im2col(ops, x, w, stride: int, padding: str, pad):
    """NHWC convolution as patches times a matrix, with the adapter's row-blocked matmul.

    x [B, H, W, C], w [kh, kw, C, O] -> [B, Ho, Wo, O]. The patches are gathered by strided
    slicing (data movement only, exact) into rows of kh * kw * C values, one row per output
    position, and multiplied by w viewed as [kh * kw * C, O] with `ops.matmul`, which runs every
    row through the same fixed 64-row GEMM: an output position's bits depend neither on the batch
    size nor on where its image sits in the batch. `pad(x, top, bottom, left, right)` zero-pads H, W.
    """
    kh, kw, c, o = (int(d) for d in w.shape)
    h, wd = int(x.shape[1]), int(x.shape[2])
    oh, top, bottom = conv_output_size(h, kh, stride, padding)
    ow, left, right = conv_output_size(wd, kw, stride, padding)
    if top or bottom or left or right:
        x = pad(x, top, bottom, left, right)
    if kh == 1 and kw == 1 and stride == 1:
        patches = x
    else:
        cols = [x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride, :]
                for i in range(kh) for j in range(kw)]
        patches = ops.concat(cols, axis=-1)
    y = ops.matmul(ops.reshape(patches, (-1, kh * kw * c)), ops.reshape(w, (kh * kw * c, o)))
    return ops.reshape(y, (-1, oh, ow, o))


def row_blocked_matmul_numpy(a, b, block: int = 64):
    """a @ b in zero-padded blocks of `block` rows (NumPy), as the adapters' matmul."""
    rows, k = a.shape
    blocks = -(-rows // block)
    if blocks * block != rows:
        a = np.concatenate([a, np.zeros((blocks * block - rows, k), a.dtype)])
    return np.matmul(a.reshape(blocks, block, k), b).reshape(blocks * block, -1)[:rows]


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

    def split(self, x, sizes, axis=0):
        """Consecutive pieces of an array along `axis` with the given sizes."""
        return np.split(x, np.cumsum(sizes)[:-1], axis=axis)

    def conv2d(self, x, w, stride: int = 1, padding: str = "VALID"):
        """NHWC 2-D convolution of x [B, H, W, C] with w [kh, kw, C, O] (im2col, 64-row blocks)."""

        class _Blocked(NumpyOps):
            def matmul(self, a, b):
                return row_blocked_matmul_numpy(a, b)

        def pad(x, t, b, l, r):
            return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))

        return conv2d_im2col(_Blocked(), np.asarray(x), np.asarray(w), int(stride), padding, pad)


numpy_ops = NumpyOps()
