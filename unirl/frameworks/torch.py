"""The PyTorch adapter: neutral ops on torch tensors, autograd for gradients, eager execution."""
from __future__ import annotations

import os
import sys

from unirl import kernels

kernels.pin()  # before the first `import torch`: MKL, ATen and oneDNN read their switches at load

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from unirl.frameworks.base import MATMUL_ROW_BLOCK, FrameworkAdapter  # noqa: E402


def _row_stable_matmul(a, b):
    """a @ b in blocks of MATMUL_ROW_BLOCK rows, zero-padded, with at least two columns (see base).

    Every row goes through the same GEMM problem, a [MATMUL_ROW_BLOCK, k] x [k, n>=2] product,
    whatever the number of rows that arrive with it: one block is one `mm`, several are one
    `bmm` over the blocks (one GEMM per block). One-row and one-column products would otherwise
    go to gemv kernels, and a GEMM's edge tiles to other micro-kernels, whose sums round
    differently from one CPU to another.
    """
    if a.dim() != 2 or b.dim() != 2:
        return torch.matmul(a, b)
    rows, k = a.shape
    cols = b.shape[1]
    if cols == 1:
        b = F.pad(b, (0, 1))
    blocks = -(-rows // MATMUL_ROW_BLOCK)
    if blocks * MATMUL_ROW_BLOCK != rows:
        a = F.pad(a, (0, 0, 0, blocks * MATMUL_ROW_BLOCK - rows))
    if blocks == 1:
        out = torch.mm(a, b)
    else:
        out = torch.bmm(a.reshape(blocks, MATMUL_ROW_BLOCK, k), b.expand(blocks, k, b.shape[1]))
        out = out.reshape(blocks * MATMUL_ROW_BLOCK, b.shape[1])
    if blocks * MATMUL_ROW_BLOCK != rows or cols == 1:
        out = out[:rows, :cols]
    return out


class TorchOps:
    name = "torch"

    def constant(self, x, dtype="float32"):
        return torch.as_tensor(np.asarray(x, dtype=dtype))

    def matmul(self, a, b):
        return _row_stable_matmul(a, b)

    def tanh(self, x):
        return torch.tanh(x)

    def relu(self, x):
        return torch.relu(x)

    def sigmoid(self, x):
        return torch.sigmoid(x)

    def exp(self, x):
        return torch.exp(x)

    def log(self, x):
        return torch.log(x)

    def sqrt(self, x):
        return torch.sqrt(x)

    def square(self, x):
        return torch.square(x)

    def abs(self, x):
        return torch.abs(x)

    def log_softmax(self, x, axis=-1):
        return torch.log_softmax(x, dim=axis)

    def softmax(self, x, axis=-1):
        return torch.softmax(x, dim=axis)

    def sum(self, x, axis=None):
        return torch.sum(x) if axis is None else torch.sum(x, dim=axis)

    def mean(self, x, axis=None):
        return torch.mean(x) if axis is None else torch.mean(x, dim=axis)

    def maximum(self, a, b):
        return torch.maximum(a, torch.as_tensor(b, dtype=a.dtype))

    def minimum(self, a, b):
        return torch.minimum(a, torch.as_tensor(b, dtype=a.dtype))

    def clip(self, x, lo, hi):
        return torch.clamp(x, lo, hi)

    def where(self, cond, a, b):
        return torch.where(cond, a, b)

    def one_hot(self, idx, n):
        return torch.nn.functional.one_hot(idx.long(), n).to(torch.float32)

    def take_along_last(self, x, idx):
        return torch.gather(x, -1, idx.long().unsqueeze(-1)).squeeze(-1)

    def stop_gradient(self, x):
        return x.detach()

    def reshape(self, x, shape):
        return torch.reshape(x, shape)

    def concat(self, xs, axis=0):
        return torch.cat(xs, dim=axis)

    def zeros_like(self, x):
        return torch.zeros_like(x)

    def argmax(self, x, axis=-1):
        return torch.argmax(x, dim=axis)

    def cast_float(self, x):
        return x.to(torch.float32)

    def take_rows(self, x, idx):
        return torch.index_select(x, 0, idx)

    def split(self, x, sizes, axis=0):
        return torch.split(x, [int(s) for s in sizes], dim=axis)

    def conv2d(self, x, w, stride=1, padding="VALID"):
        """NHWC convolution as im2col + the row-blocked matmul (unirl.ops.conv2d_im2col): row-invariant."""
        from unirl.ops import conv2d_im2col

        return conv2d_im2col(self, x, w, int(stride), padding, lambda x, t, b, l, r: F.pad(x, (0, 0, l, r, t, b)))


def _use_deterministic_algorithms() -> None:
    """torch.use_deterministic_algorithms(True) without its import of torch._inductor (which pulls in
    torch._dynamo: 1-2 s, 5 s on a loaded machine, in every worker and every replacement of a failed
    one). The switch for eager kernels is the C flag; the inductor's flag matters only to
    torch.compile, which unirl does not use, and is set too when the inductor is already loaded."""
    flag = getattr(torch._C, "_set_deterministic_algorithms", None)
    if flag is None:
        torch.use_deterministic_algorithms(True, warn_only=False)
        return
    flag(True, warn_only=False)
    config = sys.modules.get("torch._inductor.config")
    if config is not None:
        config.deterministic = True


class Adapter(FrameworkAdapter):
    name = "torch"
    ops = TorchOps()

    def __init__(self, deterministic: bool = True, num_threads: int = 1, device: str | None = None):
        super().__init__(deterministic, num_threads)
        if num_threads:
            torch.set_num_threads(int(num_threads))
            os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
        if deterministic:
            _use_deterministic_algorithms()
            # "highest" keeps float32 products on MKL's sgemm; lower precisions may route them
            # through oneDNN's reduced-precision (bf16/tf32) kernels on CPUs that have them.
            torch.set_float32_matmul_precision("highest")
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        self.device = torch.device(device or "cpu")

    def tensor(self, x):
        x = np.asarray(x)
        if not x.flags.c_contiguous or not x.flags.writeable:
            x = x.copy()
        t = torch.from_numpy(x)
        return t if self.device.type == "cpu" else t.to(self.device)

    def numpy(self, x):
        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def value_and_grad(self, fn):
        def wrapped(x, *args):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                value, aux = fn(x, *args)
                (grad,) = torch.autograd.grad(value, x)
            aux = {k: v.detach() for k, v in aux.items()}
            return (value.detach(), aux), grad

        return wrapped

    def compile(self, fn):
        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run
