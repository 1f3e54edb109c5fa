"""The TensorFlow adapter: neutral ops on tf tensors, GradientTape for gradients, tf.function (XLA) to compile."""
from __future__ import annotations

import os

from unirl import kernels

# Before the import: the kernel pins (TF_ENABLE_ONEDNN_OPTS=0: TF's eager kernels would
# otherwise go through oneDNN, whose code path and last bits depend on the CPU; compiled
# functions run on XLA either way, with the same XLA flags as JAX: one process may hold both).
kernels.pin()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # silences TF's start-up log lines

from unirl.frameworks.base import MATMUL_ROW_BLOCK, FrameworkAdapter  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


class TFOps:
    name = "tf"

    def constant(self, x, dtype="float32"):
        return tf.constant(np.asarray(x, dtype=dtype))

    def matmul(self, a, b):
        """a @ b computed in blocks of MATMUL_ROW_BLOCK rows (and at least two columns), see base."""
        if a.shape.rank != 2 or b.shape.rank != 2 or a.shape[0] is None:
            return tf.matmul(a, b)
        rows, k = a.shape
        cols = b.shape[1]
        blocks = -(-rows // MATMUL_ROW_BLOCK)
        if blocks * MATMUL_ROW_BLOCK != rows:
            a = tf.concat([a, tf.zeros((blocks * MATMUL_ROW_BLOCK - rows, k), a.dtype)], axis=0)
        if cols == 1:
            b = tf.concat([b, tf.zeros_like(b)], axis=1)
        out = tf.matmul(tf.reshape(a, (blocks, MATMUL_ROW_BLOCK, k)), tf.broadcast_to(b, (blocks,) + tuple(b.shape)))
        return tf.reshape(out, (blocks * MATMUL_ROW_BLOCK, -1))[:rows, :cols]

    def tanh(self, x):
        return tf.tanh(x)

    def relu(self, x):
        return tf.nn.relu(x)

    def sigmoid(self, x):
        return tf.sigmoid(x)

    def exp(self, x):
        return tf.exp(x)

    def log(self, x):
        return tf.math.log(x)

    def sqrt(self, x):
        return tf.sqrt(x)

    def square(self, x):
        return tf.square(x)

    def abs(self, x):
        return tf.abs(x)

    def log_softmax(self, x, axis=-1):
        return tf.nn.log_softmax(x, axis=axis)

    def softmax(self, x, axis=-1):
        return tf.nn.softmax(x, axis=axis)

    def sum(self, x, axis=None):
        return tf.reduce_sum(x, axis=axis)

    def mean(self, x, axis=None):
        return tf.reduce_mean(x, axis=axis)

    def maximum(self, a, b):
        return tf.maximum(a, tf.cast(b, a.dtype))

    def minimum(self, a, b):
        return tf.minimum(a, tf.cast(b, a.dtype))

    def clip(self, x, lo, hi):
        return tf.clip_by_value(x, tf.cast(lo, x.dtype), tf.cast(hi, x.dtype))

    def where(self, cond, a, b):
        return tf.where(cond, a, b)

    def one_hot(self, idx, n):
        return tf.one_hot(tf.cast(idx, tf.int32), n, dtype=tf.float32)

    def take_along_last(self, x, idx):
        idx = tf.cast(idx, tf.int32)
        return tf.gather(x, idx, axis=-1, batch_dims=idx.shape.rank)

    def stop_gradient(self, x):
        return tf.stop_gradient(x)

    def reshape(self, x, shape):
        return tf.reshape(x, shape)

    def concat(self, xs, axis=0):
        return tf.concat(list(xs), axis=axis)

    def zeros_like(self, x):
        return tf.zeros_like(x)

    def argmax(self, x, axis=-1):
        return tf.argmax(x, axis=axis)

    def cast_float(self, x):
        return tf.cast(x, tf.float32)

    def take_rows(self, x, idx):
        return tf.gather(x, idx, axis=0)

    def split(self, x, sizes, axis=0):
        return tf.split(x, [int(s) for s in sizes], axis=axis)

    def conv2d(self, x, w, stride=1, padding="VALID"):
        """NHWC convolution as im2col + the row-blocked matmul (unirl.ops.conv2d_im2col): row-invariant."""
        from unirl.ops import conv2d_im2col

        return conv2d_im2col(self, x, w, int(stride), padding,
                             lambda x, t, b, l, r: tf.pad(x, [[0, 0], [t, b], [l, r], [0, 0]]))


def _pin_threads(num_threads: int) -> None:
    """Pin TF's thread pools; TF refuses once its runtime has started, which is fine if they already match."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(num_threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(num_threads))
    except RuntimeError:
        pass


class Adapter(FrameworkAdapter):
    """TensorFlow 2: tf.function with XLA (`jit_compile`) for compiled functions, eager everywhere else.

    XLA rather than TF's graph executor: a small call costs about a third (33 us against 93 us
    for a trivial function; acting on one observation 110 us against 143 us on the test machine),
    the learn step runs about as fast (no clear difference measured on a loaded machine), and
    the numerics are the same compiler's as JAX's, checked row-invariant. Op determinism is switched on in deterministic mode; the thread pools are
    pinned to `num_threads` unless TF's runtime has already started (then they stay as set).
    """

    name = "tf"
    ops = TFOps()
    flat_params_for_acting = True
    traces = True

    def __init__(self, deterministic: bool = True, num_threads: int = 1, jit_compile: bool = True):
        super().__init__(deterministic, num_threads)
        if num_threads:
            _pin_threads(num_threads)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        self.jit_compile = bool(jit_compile)

    def tensor(self, x):
        return tf.convert_to_tensor(np.asarray(x))

    def numpy(self, x):
        if isinstance(x, (tf.Tensor, tf.Variable)):
            return x.numpy()
        return np.asarray(x)

    def value_and_grad(self, fn):
        def wrapped(x, *args):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                value, aux = fn(x, *args)
            grad = tape.gradient(value, x)
            aux = {k: tf.stop_gradient(v) for k, v in aux.items()}
            return (value, aux), grad

        return wrapped

    def compile_options(self) -> tuple:
        return super().compile_options() + (self.jit_compile,)

    def compile(self, fn):
        """fn under tf.function, called through one concrete function per input signature.

        Calling the concrete function directly skips tf.function's per-call argument binding,
        which is most of the cost of a small call (acting on one observation). A signature is
        the nesting plus each tensor's shape and dtype; new values (weights, an lr schedule)
        reuse the trace.
        """
        traces = [0]

        def counted(*args):
            traces[0] += 1  # the Python body runs only while TF traces
            return fn(*args)

        function = tf.function(counted, autograph=False, jit_compile=self.jit_compile)
        concrete = {}

        def run(*args):
            key = _signature(args)
            f = concrete.get(key)
            if f is None:
                f = concrete[key] = _fast_call(function.get_concrete_function(*args), args)
            return f(*args)

        run.unirl_trace_count = lambda: traces[0]
        return run

    def trace_count(self, compiled):
        return compiled.unirl_trace_count()


def _fast_call(concrete, args):
    """A caller for one concrete function: its flat entry point when every argument is a tensor.

    `ConcreteFunction._call_flat` is private but has kept its (tensors, captured) form since
    TF 2.0; it halves the cost of a small call (on the test machine, acting on one observation:
    about 35-45 us against 75 us through the public call). Nested arguments (the learn step, where
    the call's cost is small beside its work), and a TF without it, take the public call.
    """
    flat_args = all(isinstance(a, tf.Tensor) for a in args)
    call_flat = getattr(concrete, "_call_flat", None)
    if flat_args and call_flat is not None:
        captured = concrete.captured_inputs
        return lambda *args: call_flat(list(args), captured)
    return concrete


def _signature(tree):
    """A hashable key for a nest of tensors: its structure, shapes and dtypes."""
    if isinstance(tree, dict):
        return ("d",) + tuple((k, _signature(v)) for k, v in tree.items())
    if isinstance(tree, (tuple, list)):
        return (type(tree),) + tuple(_signature(v) for v in tree)
    return (tuple(tree.shape), tree.dtype)
