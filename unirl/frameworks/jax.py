"""The JAX adapter: neutral ops on jax.numpy arrays, jax.value_and_grad for gradients, jax.jit to compile."""
from __future__ import annotations

import os

from unirl import kernels

kernels.pin()  # before the first `import jax`: XLA reads its flags once

from unirl.frameworks.base import MATMUL_ROW_BLOCK, FrameworkAdapter  # noqa: E402
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402
import numpy as np  # noqa: E402


def compilation_cache_dir() -> str | None:
    """Where compiled XLA executables are kept between runs: `UNIRL_JAX_CACHE_DIR` ("" turns the
    cache off), else a folder per CPU model under the user's cache folder (an executable is compiled
    for the CPU it was built on; a home folder shared by a cluster's machines keeps one per model).
    None where the user set JAX's own `JAX_COMPILATION_CACHE_DIR` (theirs wins) or has no `filelock`
    (JAX needs it to lock the cache against concurrent workers)."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    path = os.environ.get("UNIRL_JAX_CACHE_DIR")
    if path is not None:
        return path or None
    try:
        import filelock  # noqa: F401
    except ImportError:
        return None
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "unirl", f"jax-{jax.__version__}-{kernels.cpu_tag()}")


def _enable_compilation_cache() -> None:
    """JAX's persistent compilation cache, for every compiled step (JAX's default keeps only those
    that took over a second). A PPO run on CartPole compiles for ~0.9 s before its first iteration;
    from the cache, ~0.1-0.17 s, the same executables and bits (weights digests unchanged).
    A size cap turns on JAX's file lock, so concurrent workers never read a half-written entry."""
    path = compilation_cache_dir()
    if path is None:
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", 512 * 2**20)


_enable_compilation_cache()


def _row_stable_matmul(a, b):
    """a @ b computed in blocks of MATMUL_ROW_BLOCK rows (and at least two columns), see base."""
    if a.ndim != 2 or b.ndim != 2:
        return jnp.matmul(a, b)
    rows, k = a.shape
    cols = b.shape[1]
    blocks = -(-rows // MATMUL_ROW_BLOCK)
    if blocks * MATMUL_ROW_BLOCK != rows:
        a = jnp.concatenate([a, jnp.zeros((blocks * MATMUL_ROW_BLOCK - rows, k), a.dtype)], axis=0)
    if cols == 1:
        b = jnp.concatenate([b, jnp.zeros_like(b)], axis=1)
    a = a.reshape(blocks, MATMUL_ROW_BLOCK, k)
    if blocks == 1:
        # jnp.einsum("rik,kn->rin", a, b), as the same dot_general it lowers to, without einsum's
        # trace-time parsing (~8 ms per product when a new policy traces its steps)
        out = lax.dot_general(a, b, (((2,), (0,)), ((), ())), preferred_element_type=jnp.result_type(a, b))
    else:
        # A true batched dot, one [MATMUL_ROW_BLOCK, k] x [k, n] problem per block. The einsum
        # "rik,kn->rin" is one [blocks * MATMUL_ROW_BLOCK, k] GEMM in disguise, and XLA may pick
        # another kernel for it than for one block (seen on an AMD EPYC: n = 2, 65 rows and more,
        # other bits in the first block's rows). One block keeps the einsum: the same bits as ever.
        out = lax.dot_general(a, jnp.broadcast_to(b, (blocks,) + b.shape), (((2,), (1,)), ((0,), (0,))))
    return out.reshape(blocks * MATMUL_ROW_BLOCK, -1)[:rows, :cols]


class JaxOps:
    name = "jax"

    def constant(self, x, dtype="float32"):
        return jnp.asarray(np.asarray(x, dtype=dtype))

    def matmul(self, a, b):
        return _row_stable_matmul(a, b)

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

    def split(self, x, sizes, axis=0):
        return jnp.split(x, np.cumsum([int(s) for s in sizes])[:-1].tolist(), axis=axis)

    def conv2d(self, x, w, stride=1, padding="VALID"):
        """NHWC convolution as im2col + the row-blocked matmul (unirl.ops.conv2d_im2col): row-invariant."""
        from unirl.ops import conv2d_im2col

        return conv2d_im2col(self, x, w, int(stride), padding,
                             lambda x, t, b, l, r: jnp.pad(x, ((0, 0), (t, b), (l, r), (0, 0))))


class Adapter(FrameworkAdapter):
    """JAX on CPU: jax.jit for compiled functions; 64-bit integers arrive as int32 (x64 stays off).

    Determinism needs nothing beyond the XLA flags set at import (single-threaded Eigen
    kernels; XLA's CPU code is otherwise deterministic), so `deterministic` and `num_threads`
    change nothing here: XLA's flags are read once per process, before any adapter exists.
    """

    name = "jax"
    ops = JaxOps()
    flat_params_for_acting = True
    compiled_loops = True
    traces = True

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

    def scan(self, body, init, xs):
        return lax.scan(body, init, xs)

    def trace_count(self, compiled):
        return compiled.unirl_trace_count()
