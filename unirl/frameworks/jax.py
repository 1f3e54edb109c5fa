"""The JAX adapter: neutral ops on jax.numpy arrays, jax.value_and_grad for gradients, jax.jit to compile."""
from __future__ import annotations

import os

# Before the first `import jax`: XLA reads its flags once. One compute thread (no Eigen thread
# pool) keeps reductions in one order, and JAX on CPU runs everything on that thread.
_XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1")
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", "")] + [f for f in _XLA_FLAGS if f.split("=")[0] not in os.environ.get("XLA_FLAGS", "")]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from unirl.frameworks.base import FrameworkAdapter  # noqa: E402


#: XLA on CPU emits a product with fewer rows than this, or with one column, with kernels whose
#: sums round differently from those of a larger batch; padding to this many rows and to two
#: columns keeps a row's result the same whatever the batch it arrives in (acting with any
#: number of envs per worker).
MIN_MATMUL_ROWS = 64


def _row_stable_matmul(np_like, a, b):
    """a @ b for a 2-D `a` whose rows do not depend on how many rows `a` has (static shapes)."""
    if len(a.shape) != 2 or len(b.shape) != 2:
        return np_like.matmul(a, b)
    rows, cols = a.shape[0], b.shape[1]
    if cols == 1:
        b = np_like.concatenate([b, np_like.zeros_like(b)], axis=1)
    if rows < MIN_MATMUL_ROWS:
        a = np_like.concatenate([a, np_like.zeros((MIN_MATMUL_ROWS - rows, a.shape[1]), a.dtype)], axis=0)
    out = np_like.matmul(a, b)
    if rows < MIN_MATMUL_ROWS or cols == 1:
        out = out[:rows, :cols]
    return out


class JaxOps:
    name = "jax"

    def constant(self, x, dtype="float32"):
        return jnp.asarray(np.asarray(x, dtype=dtype))

    def matmul(self, a, b):
        return _row_stable_matmul(jnp, a, b)

    def tanh(self, x):
        return jnp.tanh(x)

    def relu(self, x):
        return jax.nn.relu(x)

    def sigmoid(self, x):
        return jax.nn.sigmoid(x)

    def exp(self, x):
        return jnp.exp(x)

    def log(self, x):
        return jnp.log(x)

    def sqrt(self, x):
        return jnp.sqrt(x)

    def square(self, x):
        return jnp.square(x)

    def abs(self, x):
        return jnp.abs(x)

    def log_softmax(self, x, axis=-1):
        return jax.nn.log_softmax(x, axis=axis)

    def softmax(self, x, axis=-1):
        return jax.nn.softmax(x, axis=axis)

    def sum(self, x, axis=None):
        return jnp.sum(x, axis=axis)

    def mean(self, x, axis=None):
        return jnp.mean(x, axis=axis)

    def maximum(self, a, b):
        return jnp.maximum(a, jnp.asarray(b, a.dtype))

    def minimum(self, a, b):
        return jnp.minimum(a, jnp.asarray(b, a.dtype))

    def clip(self, x, lo, hi):
        return jnp.clip(x, jnp.asarray(lo, x.dtype), jnp.asarray(hi, x.dtype))

    def where(self, cond, a, b):
        return jnp.where(cond, a, b)

    def one_hot(self, idx, n):
        return jax.nn.one_hot(idx, n, dtype=jnp.float32)

    def take_along_last(self, x, idx):
        return jnp.take_along_axis(x, jnp.asarray(idx)[..., None], axis=-1)[..., 0]

    def stop_gradient(self, x):
        return jax.lax.stop_gradient(x)

    def reshape(self, x, shape):
        return jnp.reshape(x, shape)

    def concat(self, xs, axis=0):
        return jnp.concatenate(list(xs), axis=axis)

    def zeros_like(self, x):
        return jnp.zeros_like(x)

    def argmax(self, x, axis=-1):
        return jnp.argmax(x, axis=axis)

    def cast_float(self, x):
        return jnp.asarray(x, jnp.float32)

    def take_rows(self, x, idx):
        return jnp.take(x, idx, axis=0)

    def split(self, x, sizes):
        return jnp.split(x, np.cumsum([int(s) for s in sizes])[:-1].tolist())


class Adapter(FrameworkAdapter):
    """JAX on CPU: jax.jit for compiled functions; 64-bit integers arrive as int32 (x64 stays off).

    XLA on CPU is deterministic on one thread; the flags above are set before JAX starts, so
    `num_threads` other than 1 only applies if XLA_FLAGS already asked for it.
    """

    name = "jax"
    ops = JaxOps()
    flat_params_for_acting = True

    def __init__(self, deterministic: bool = True, num_threads: int = 1):
        super().__init__(deterministic, num_threads)
        self.device = jax.devices("cpu")[0]

    def tensor(self, x):
        return jax.device_put(self.call_input(x), self.device)

    def call_input(self, x):
        """NumPy as it is (jit converts it on its C++ path, faster than device_put), in JAX's dtypes."""
        x = np.asarray(x)
        if x.dtype == np.int64 or x.dtype == np.uint64:
            # x64 is off: JAX would truncate them anyway; actions and row indices fit in int32.
            return x.astype(np.int32)
        if x.dtype == np.float64:
            return x.astype(np.float32)
        return x

    def numpy(self, x):
        return np.asarray(x)

    def value_and_grad(self, fn):
        return jax.value_and_grad(fn, has_aux=True)

    def compile(self, fn):
        traces = [0]

        def counted(*args):
            traces[0] += 1  # the Python body runs only while JAX traces
            return fn(*args)

        run = jax.jit(counted)
        run.unirl_trace_count = lambda: traces[0]
        return run

    def trace_count(self, compiled):
        return compiled.unirl_trace_count()
