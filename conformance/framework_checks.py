"""Reusable checks that a framework adapter computes what unirl's neutral math promises.

Every check takes adapters (objects, or specs: "torch", "tf", "jax", "pkg.module:Class") and
returns structured results instead of asserting, so a failure names the array, the first index
that differs, both values and the size of the difference. Tests and the conformance suite
assert on these results.

Functions:

- `load_adapter(spec, **options)`: an adapter from an object, a name or an import path.
- `framework_spec(adapter)`: the string that names this adapter in a config (`framework=`).
- `compare_arrays(name, expected, actual, rtol, atol)` -> `Finding`: the difference of two arrays.
- `check_ops_against_numpy(adapter)` -> list[`Finding`]: every op in `unirl.ops.OPS_NAMES` and
  the tensor operators, against `NumpyOps` on fixed inputs.
- `check_value_and_grad(adapter)` -> list[`Finding`]: `value_and_grad`, compiled, against
  gradients written out by hand.
- `check_row_invariance(adapter, batch_sizes)` -> list[`Finding`]: a row's policy output,
  log-probability inputs and value do not depend on the size of the batch it arrives in (1..600
  rows) nor on its position in it (bitwise), which worker-count invariance needs.
- `check_optimizer_step(adapter, steps)` -> list[`Finding`]: the optimizer chain (global-norm
  clipping, then Adam), compiled on the adapter, against a float64 NumPy reference.
- `small_config(algo, num_workers)` -> dict: the algorithm's small conformance config (its
  ConformanceSpec's `run_config`) with `total_envs` split over the workers.
- `capture_problem(algo, config, framework, call)` -> `LossProblem`: runs the algorithm on the
  local backend and captures one of its OWN learning calls through `Policy.recorder`: the batch
  and hyperparameters it passed, and every parameter set and the optimizer state before the call.
- `build_learner_policy(adapter, problem)` -> Policy: the algorithm's module, loss, optimizer and
  parameter sets (`Algorithm.build_policy`) on another adapter, loaded with the captured state.
- `loss_and_grads(adapter, problem)` -> dict of NumPy arrays: loss, stats, raw gradient and the
  learner state after one learn step, through `Policy` (the compiled path training uses).
- `compare_loss_and_grads(adapter_a, adapter_b, problem)` -> dict: per array (loss, grad,
  weights_after_step, after_step/opt/..., stats/...) its `Finding` as a dict (max abs / rel
  differences, first differing index, both values).
- `count_traces(framework, iterations, config, algo)` -> dict: how often each compiled function of
  an algorithm's policy (default PPO) was traced over a few training iterations with a changing learning rate.
- `train_weights(framework, iterations, config, algo)` -> NumPy flat weights after a short run.
- `check_same_run_twice(framework, iterations, config)` -> `Finding`: two runs, bit-identical.
- `check_worker_count_invariance(framework, worker_counts)` -> list[`Finding`]: the same envs
  split over 1, 2, 4 workers (local backend unless the config says otherwise) give bit-identical weights.
- `check_checkpoint_transfer(src, dst, ...)` -> `Finding`: a checkpoint trained with `src`,
  loaded with `dst`, picks the same greedy actions on fixed observations.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from unirl.ops import OPS_NAMES, numpy_ops

@dataclass
class Finding:
    """The outcome of comparing one array (or one check) for one adapter."""

    check: str
    array: str
    ok: bool
    max_abs_diff: float = 0.0
    #: max over elements of |a - b| / max(|a|, |b|) (elements where both are 0 count as equal).
    max_rel_diff: float = 0.0
    #: max |a - b| divided by the larger of the arrays' largest magnitudes: the difference relative
    #: to the array's scale, which is what a tolerance on a gradient vector means.
    scale_rel_diff: float = 0.0
    first_index: tuple | None = None  # first element outside the tolerance (or that differs, if exact)
    expected: Any = None  # the values there
    actual: Any = None
    message: str = ""
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        status = "ok" if self.ok else "FAILED"
        s = f"[{status}] {self.check}: {self.array}"
        if self.message:
            s += f": {self.message}"
        if self.first_index is not None:
            s += f" (first at {self.first_index}: expected {self.expected!r}, got {self.actual!r})"
        return s + f" max_abs={self.max_abs_diff:.3g} max_rel={self.max_rel_diff:.3g} scale_rel={self.scale_rel_diff:.3g}"


def failures(findings) -> list[Finding]:
    """The findings that are not ok (accepts a list of Findings or a dict name -> Finding dict)."""
    if isinstance(findings, dict):
        return [Finding(**f) for f in findings.values() if not f["ok"]]
    return [f for f in findings if not f.ok]


# -- adapters ---------------------------------------------------------------------------------
def load_adapter(spec, **options):
    """An adapter: `spec` itself if it is one, else by name ("jax") or import path ("pkg.mod:Class")."""
    if not isinstance(spec, str):
        return spec
    from unirl.frameworks import get_adapter

    return get_adapter(spec, **options)


def framework_spec(adapter) -> str:
    """The `framework` config value that builds this kind of adapter (a name, or "module:Class")."""
    if isinstance(adapter, str):
        return adapter
    from unirl.frameworks import FRAMEWORKS

    cls = type(adapter)
    for name, (mod_name, _, _) in FRAMEWORKS.items():
        if cls.__module__ == mod_name and cls.__name__ == "Adapter":
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


# -- array comparison -------------------------------------------------------------------------
def _py(x):
    x = np.asarray(x)
    return x.item() if x.size == 1 else x.tolist()


def compare_arrays(name: str, expected, actual, rtol: float = 0.0, atol: float = 0.0,
                   check: str = "compare", scale_relative: bool = False) -> Finding:
    """How `actual` differs from `expected`; ok when every |a - e| <= atol + rtol * tol_base.

    tol_base is |e| per element, or with `scale_relative` the largest |e| or |a| in the array.
    rtol = atol = 0 asks for bitwise equality (NaNs in the same places count as equal).
    """
    e = np.asarray(expected)
    a = np.asarray(actual)
    if e.shape != a.shape:
        return Finding(check, name, False, math.inf, math.inf, math.inf,
                       message=f"shape {a.shape}, expected {e.shape}")
    if e.size == 0:
        return Finding(check, name, True)
    e64, a64 = e.astype(np.float64), a.astype(np.float64)
    diff = np.abs(a64 - e64)
    both_nan = np.isnan(e64) & np.isnan(a64)
    diff = np.where(both_nan, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)  # one NaN, or inf - inf
    mag = np.maximum(np.abs(e64), np.abs(a64))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(diff == 0, 0.0, diff / mag)
    finite_mag = mag[np.isfinite(mag)]
    scale = float(finite_mag.max()) if finite_mag.size else 0.0
    max_abs = float(diff.max())
    max_rel = float(rel.max())
    scale_rel = 0.0 if max_abs == 0 else (max_abs / scale if scale > 0 else math.inf)
    if rtol == 0 and atol == 0:
        bad = diff != 0
    else:
        base = scale if scale_relative else np.abs(e64)
        bad = diff > atol + rtol * base
    f = Finding(check, name, not bool(bad.any()), max_abs, max_rel, scale_rel)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        f.first_index = idx
        f.expected = _py(e[idx])
        f.actual = _py(a[idx])
        f.message = f"{int(bad.sum())} of {bad.size} elements differ"
    return f


# -- ops --------------------------------------------------------------------------------------
def _op_cases(rng):
    """(name, function of (ops, to_tensor), needs exact equality) for every neutral op and operator."""
    x = rng.standard_normal((5, 7)).astype(np.float32)
    y = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((7, 3)).astype(np.float32)
    pos = (np.abs(x) + 0.1).astype(np.float32)
    idx = np.array([0, 6, 3, 2, 6], np.int64)
    rows = np.array([4, 0, 0, 2], np.int64)
    flat = rng.standard_normal(12).astype(np.float32)
    big = (x * 30).astype(np.float32)  # softmax with large logits: tests the max-subtraction
    image = rng.standard_normal((2, 7, 6, 3)).astype(np.float32)  # NHWC
    kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)  # HWIO

    def c(f, *arrays):
        return lambda ops, t: f(ops, *[t(v) for v in arrays])

    return [
        ("constant", lambda ops, t: ops.constant([[1.5, -2.0], [3.0, 0.25]]), True),
        ("matmul", c(lambda o, a, b: o.matmul(a, b), x, w), False),
        ("matmul/one_row", c(lambda o, a, b: o.matmul(a, b), x[:1], w), False),
        ("tanh", c(lambda o, a: o.tanh(a), x), False),
        ("relu", c(lambda o, a: o.relu(a), x), True),
        ("sigmoid", c(lambda o, a: o.sigmoid(a), x), False),
        ("exp", c(lambda o, a: o.exp(a), x), False),
        ("log", c(lambda o, a: o.log(a), pos), False),
        ("sqrt", c(lambda o, a: o.sqrt(a), pos), False),
        ("square", c(lambda o, a: o.square(a), x), True),
        ("abs", c(lambda o, a: o.abs(a), x), True),
        ("log_softmax", c(lambda o, a: o.log_softmax(a), big), False),
        ("log_softmax/axis0", c(lambda o, a: o.log_softmax(a, axis=0), x), False),
        ("softmax", c(lambda o, a: o.softmax(a), big), False),
        ("sum", c(lambda o, a: o.sum(a), x), False),
        ("sum/axis", c(lambda o, a: o.sum(a, axis=-1), x), False),
        ("mean", c(lambda o, a: o.mean(a), x), False),
        ("mean/axis0", c(lambda o, a: o.mean(a, axis=0), x), False),
        ("maximum", c(lambda o, a, b: o.maximum(a, b), x, y), True),
        ("maximum/scalar", c(lambda o, a: o.maximum(a, 0.5), x), True),
        ("minimum", c(lambda o, a, b: o.minimum(a, b), x, y), True),
        ("minimum/scalar", c(lambda o, a: o.minimum(a, -0.5), x), True),
        ("clip", c(lambda o, a: o.clip(a, -0.3, 0.7), x), True),
        ("clip/tensor_bounds", lambda o, t: o.clip(t(x), 1.0 - t(np.float32(0.2)), 1.0 + t(np.float32(0.2))), True),
        ("where", c(lambda o, a, b: o.where(a > b, a, b), x, y), True),
        ("one_hot", c(lambda o, i: o.one_hot(i, 7), idx), True),
        ("take_along_last", c(lambda o, a, i: o.take_along_last(a, i), x, idx), True),
        ("stop_gradient", c(lambda o, a: o.stop_gradient(a), x), True),
        ("reshape", c(lambda o, a: o.reshape(a, (7, 5)), x), True),
        ("reshape/-1", c(lambda o, a: o.reshape(a, (-1,)), x), True),
        ("concat", c(lambda o, a, b: o.concat([a, b], axis=0), x, y), True),
        ("concat/axis1", c(lambda o, a, b: o.concat([a, b], axis=1), x, y), True),
        ("zeros_like", c(lambda o, a: o.zeros_like(a), x), True),
        ("argmax", c(lambda o, a: o.argmax(a), x), True),
        ("cast_float", c(lambda o, i: o.cast_float(i), idx), True),
        ("cast_float/bool", c(lambda o, a, b: o.cast_float(a > b), x, y), True),
        ("take_rows", c(lambda o, a, r: o.take_rows(a, r), x, rows), True),
        ("conv2d", c(lambda o, a, k: o.conv2d(a, k, stride=1, padding="VALID"), image, kernel), False),
        ("conv2d/same_stride2", c(lambda o, a, k: o.conv2d(a, k, stride=2, padding="SAME"), image, kernel), False),
        ("split", lambda o, t: o.concat([o.reshape(p, (-1,)) * (k + 1.0) for k, p in enumerate(o.split(t(flat), [3, 4, 5]))]), True),
        ("operators/+-*/", c(lambda o, a, b: (a + b) * a - b / (o.abs(a) + 1.0), x, y), False),
        ("operators/scalar", c(lambda o, a: 2.0 - a * 0.5 + 1.0 / (o.abs(a) + 1.0), x), False),
        ("operators/pow", lambda o, t: o.constant(0.999) ** t(np.float32(7.0)), False),
        ("operators/neg", c(lambda o, a: -a, x), True),
        ("operators/compare", c(lambda o, a: o.cast_float(a > 0.3), x), True),
        ("operators/slice", c(lambda o, a: a[1:3], x), True),
    ]


def check_ops_against_numpy(adapter, rtol: float = 2e-6, atol: float = 1e-6) -> list[Finding]:
    """Each neutral op (and tensor operator) on the adapter against NumpyOps on fixed inputs.

    Ops that only move, select or compare values must match exactly; arithmetic ones within
    rtol (float32 transcendental functions differ in the last bits between libraries).
    """
    adapter = load_adapter(adapter)
    ops = adapter.ops
    findings = []
    missing = [n for n in OPS_NAMES if not callable(getattr(ops, n, None))]
    for n in missing:
        findings.append(Finding("ops", n, False, message="op missing from the adapter's ops"))
    for name, f, exact in _op_cases(np.random.default_rng(1234)):
        if name.split("/")[0] in missing:
            continue
        try:
            expected = f(numpy_ops, np.asarray)
            actual = adapter.numpy(f(ops, adapter.tensor))
        except Exception as e:  # a broken op is a finding, not a crash of the whole check
            findings.append(Finding("ops", name, False, message=f"raised {type(e).__name__}: {e}"))
            continue
        fd = compare_arrays(name, expected, actual, 0.0 if exact else rtol, 0.0 if exact else atol, check="ops")
        if fd.ok and np.asarray(expected).dtype.kind == "f" and np.asarray(actual).dtype != np.float32:
            fd.ok = False
            fd.message = f"dtype {np.asarray(actual).dtype}, expected float32"
        findings.append(fd)
    return findings


def check_value_and_grad(adapter, rtol: float = 1e-5) -> list[Finding]:
    """Compiled `value_and_grad` on f(x, w) = sum(tanh(x @ w)^2) with aux, against the hand-derived gradient."""
    adapter = load_adapter(adapter)
    ops = adapter.ops
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3)).astype(np.float32)

    def f(wt, xt):
        h = ops.tanh(ops.matmul(xt, wt))
        return ops.sum(ops.square(h)), {"mean_h": ops.mean(h)}

    step = adapter.compile(adapter.value_and_grad(f))
    (value, aux), grad = step(adapter.tensor(w), adapter.tensor(x))
    h = np.tanh(x.astype(np.float64) @ w.astype(np.float64))
    expected_grad = x.T.astype(np.float64) @ (2 * h * (1 - h * h))
    return [
        compare_arrays("value", h.__pow__(2).sum(), adapter.numpy(value), rtol, check="value_and_grad"),
        compare_arrays("aux/mean_h", h.mean(), adapter.numpy(aux["mean_h"]), rtol, 1e-7, check="value_and_grad"),
        compare_arrays("grad", expected_grad, adapter.numpy(grad), rtol, check="value_and_grad", scale_relative=True),
    ]


def _distribution_cases(rng):
    """(name, distribution, inputs x, other inputs y, actions) for every action distribution of the actor-critics."""
    from unirl.distributions import Categorical, DiagGaussian, MultiCategorical

    rows = 9
    cat = Categorical(5)
    gauss = DiagGaussian(-np.ones(3), np.ones(3))
    multi = MultiCategorical([3, 2, 4])

    def gaussian_inputs():
        return np.concatenate([rng.standard_normal((rows, 3)), rng.normal(-0.5, 0.4, (rows, 3))], -1).astype(np.float32)

    return [
        ("categorical", cat, rng.standard_normal((rows, 5)).astype(np.float32),
         rng.standard_normal((rows, 5)).astype(np.float32), rng.integers(0, 5, rows)),
        ("diag_gaussian", gauss, gaussian_inputs(), gaussian_inputs(),
         (rng.standard_normal((rows, 3)) * 1.5).astype(np.float32)),  # some outside the Box: the loss sees them unclipped
        ("multi_categorical", multi, rng.standard_normal((rows, 9)).astype(np.float32),
         rng.standard_normal((rows, 9)).astype(np.float32),
         np.stack([rng.integers(0, n, rows) for n in (3, 2, 4)], -1)),
    ]


def check_distributions(adapter, rtol: float = 1e-5, grad_rtol: float = 1e-4) -> list[Finding]:
    """Each action distribution's logp, entropy and KL on the adapter's ops (compiled) against NumPy's, and the
    gradient of their sum with respect to the inputs against float64 central differences of NumPy's."""
    adapter = load_adapter(adapter)
    ops = adapter.ops
    findings = []
    for name, dist, x, y, actions in _distribution_cases(np.random.default_rng(21)):
        def terms(o, xt, yt, at, d=dist):
            return d.logp(o, xt, at), d.entropy(o, xt), d.kl(o, xt, yt)

        def total(xt, yt, at):
            lp, ent, kl = terms(ops, xt, yt, at)
            return ops.sum(lp) + 0.5 * ops.sum(ent) + 0.25 * ops.sum(kl), {"logp": lp, "entropy": ent, "kl": kl}

        try:
            (value, aux), grad = adapter.compile(adapter.value_and_grad(total))(
                adapter.tensor(x), adapter.tensor(y), adapter.tensor(actions))
        except Exception as e:
            findings.append(Finding("distributions", name, False, message=f"raised {type(e).__name__}: {e}"))
            continue
        want = terms(numpy_ops, x.astype(np.float64), y.astype(np.float64), actions)
        for key, w in zip(("logp", "entropy", "kl"), want):
            findings.append(compare_arrays(f"{name}/{key}", w, adapter.numpy(aux[key]), rtol, 1e-6,
                                           check="distributions"))

        def f64(xx):
            lp, ent, kl = terms(numpy_ops, xx, y.astype(np.float64), actions)
            return float(np.sum(lp) + 0.5 * np.sum(ent) + 0.25 * np.sum(kl))

        x64, h, fd = x.astype(np.float64), 1e-6, np.zeros(x.size)
        for i in range(x.size):
            e = np.zeros(x.size)
            e[i] = h
            fd[i] = (f64(x64 + e.reshape(x.shape)) - f64(x64 - e.reshape(x.shape))) / (2 * h)
        findings.append(compare_arrays(f"{name}/value", f64(x64), adapter.numpy(value), rtol, check="distributions"))
        findings.append(compare_arrays(f"{name}/grad", fd.reshape(x.shape), adapter.numpy(grad), grad_rtol,
                                       check="distributions", scale_relative=True))
    return findings


def check_row_invariance_cnn(adapter, batch_sizes=(1, 2, 3, 7, 8, 9, 63, 64, 65), seed: int = 0) -> list[Finding]:
    """Row invariance (see check_row_invariance) of an image model: the MinAtar CNN torso on uint8 10x10x4
    frames with a diagonal Gaussian head, over fewer sizes and shifts (a CNN row costs more)."""
    from unirl.distributions import DiagGaussian

    return check_row_invariance(adapter, batch_sizes, obs_dim=(10, 10, 4), seed=seed, shifts=(0, 1, 5, 63, 64),
                                shifted_sizes=(1, 7), dist=DiagGaussian(-np.ones(2), np.ones(2)))


def check_row_invariance(adapter, batch_sizes=tuple(range(1, 601)), obs_dim=4, num_outputs: int = 2,
                         seed: int = 0, shifts=tuple(range(0, 130)), shifted_sizes=(1, 2, 3, 7, 64),
                         dist=None) -> list[Finding]:
    """A row's acting and learning outputs are bitwise the same whatever batch it arrives in, wherever in it.

    Runs the compiled `Policy.policy_outputs` (acting) and `Policy.forward` (the learner's
    log-probabilities and values) and compares, strictly, with each row computed alone:

    - sizes: the first n rows, for every n in `batch_sizes` (1..600 by default; forward is
      padded to multiples of 64 rows, so it is swept over one size per padded length plus its
      edges);
    - positions: the first n rows (n in `shifted_sizes`) placed after `shifts` other rows, as a
      worker sees env k at another offset when the envs are split differently.
    """
    from unirl.distributions import Categorical
    from unirl.models import MINATAR_CNN, ActorCritic, ModelConfig
    from unirl.policy import Policy

    adapter = load_adapter(adapter)
    image = isinstance(obs_dim, tuple)
    config = ModelConfig(conv_filters=MINATAR_CNN, obs_scale=1.0) if image else ModelConfig()
    module = ActorCritic(obs_dim, dist or Categorical(num_outputs), config)
    policy = Policy(adapter, module, module.init_params(seed))

    def forward(x):
        out = policy.forward(x)
        return out["dist_inputs"], out["values"]

    rng = np.random.default_rng(seed)
    most = max(max(batch_sizes), max(shifted_sizes))
    if image:  # frames as MinAtar sends them: uint8 0/1 channels
        obs = rng.integers(0, 2, (most,) + obs_dim).astype(np.uint8)
        filler = rng.integers(0, 2, (max(shifts, default=0),) + obs_dim).astype(np.uint8)
    else:
        obs = rng.standard_normal((most, obs_dim)).astype(np.float32)
        filler = rng.standard_normal((max(shifts, default=0), obs_dim)).astype(np.float32)
    # The reference: every row alone (a batch of one).
    alone_out = np.concatenate([policy.policy_outputs(obs[i:i + 1]) for i in range(most)])
    alone = [forward(obs[i:i + 1]) for i in range(most)]
    alone_fwd = np.concatenate([o for o, _ in alone])
    alone_v = np.concatenate([v for _, v in alone])
    findings = []

    def compare(name, want, got):
        f = compare_arrays(name, want, got, check="row_invariance")
        if not f.ok or not findings or not findings[-1].ok or findings[-1].array.split("[")[0] != name.split("[")[0]:
            findings.append(f)  # keep every failure, and one passing finding per kind

    forward_sizes = sorted({n for n in batch_sizes if n % 64 in (0, 1, 63) or n < 8})
    for n in batch_sizes:
        compare(f"policy_outputs[:{n}]", alone_out[:n], policy.policy_outputs(obs[:n]))
        if n in forward_sizes:
            out, v = forward(obs[:n])
            compare(f"forward/outputs[:{n}]", alone_fwd[:n], out)
            compare(f"forward/values[:{n}]", alone_v[:n], v)
    for n in shifted_sizes:
        for s in shifts:
            batch = np.concatenate([filler[:s], obs[:n]])
            compare(f"policy_outputs[shift {s}][:{n}]", alone_out[:n], policy.policy_outputs(batch)[s:])
            if s % 7 == 0 or s in (63, 64, 65):
                out, v = forward(batch)
                compare(f"forward/outputs[shift {s}][:{n}]", alone_fwd[:n], out[s:])
                compare(f"forward/values[shift {s}][:{n}]", alone_v[:n], v[s:])
    return findings


def check_row_invariance_recurrent(adapter, sizes=(1, 2, 3, 7, 8, 9, 63, 64, 65), shifts=(0, 1, 5, 63, 64),
                                   seed: int = 0) -> list[Finding]:
    """Row invariance of a recurrent module (unirl.recurrent, an LSTM after an MLP torso): one env's step (outputs
    and next state, from its own state) is bitwise the same whatever the number of envs in the call and its place
    among them (acting and the learner's replay), and so is one sequence's pass in the loss, whatever the other
    sequences of its minibatch."""
    from unirl import sample_batch as sb
    from unirl.distributions import Categorical
    from unirl.models import ModelConfig
    from unirl.policy import Policy
    from unirl.models import RecurrentActorCritic
    from unirl.recurrent import step_outputs

    adapter = load_adapter(adapter)
    module = RecurrentActorCritic(4, Categorical(2), ModelConfig(hidden_sizes=(16,), lstm_cell_size=8))
    policy = Policy(adapter, module, module.init_params(seed))
    rng = np.random.default_rng(seed)
    most = max(sizes) + max(shifts)
    obs = rng.standard_normal((most, 4)).astype(np.float32)
    state = rng.standard_normal((most, 16)).astype(np.float32)
    alone = [step_outputs(policy, obs[i:i + 1], state[i:i + 1]) for i in range(max(sizes))]
    findings = []

    def compare(name, want, got):
        f = compare_arrays(name, want, got, check="row_invariance")
        if not f.ok or not findings or not findings[-1].ok or findings[-1].array.split("[")[0] != name.split("[")[0]:
            findings.append(f)

    for n in sizes:
        for shift in shifts:
            out = step_outputs(policy, obs[shift:shift + n], state[shift:shift + n]) if shift == 0 else \
                step_outputs(policy, np.concatenate([obs[max(sizes):max(sizes) + shift], obs[:n]]),
                             np.concatenate([state[max(sizes):max(sizes) + shift], state[:n]]))
            for key in ("dist_inputs", "values", "state"):
                want = np.concatenate([a[key] for a in alone[:n]])
                compare(f"step/{key}[shift {shift}][:{n}]", want, out[key][shift:])
    # the loss's pass over sequences of 5 steps (an episode starting at the third step of each): sequence 0 alone,
    # then among others
    length, seqs = 5, 9
    sobs = rng.standard_normal((seqs * length, 4)).astype(np.float32)
    sstate = rng.standard_normal((seqs, 16)).astype(np.float32)
    resets = np.tile(np.array([0, 0, 1, 0, 0], np.float32), seqs)
    seq_pass = policy.call(_sequence_pass, {sb.OBS: sobs[:length], sb.STATE_IN: sstate[:1], sb.RESETS: resets[:length]})
    for k in (2, 3, 8, 9):
        out = policy.call(_sequence_pass, {sb.OBS: sobs[:k * length], sb.STATE_IN: sstate[:k],
                                           sb.RESETS: resets[:k * length]})
        for key in ("dist_inputs", "values"):
            compare(f"sequences/{key}[of {k}]", seq_pass[key], out[key][:length])
    return findings


def _sequence_pass(ops, module, params, batch):
    from unirl.models import train_outputs

    return train_outputs(ops, module, params, batch)


def check_optimizer_step(adapter, steps: int = 5, max_norm: float = 0.5, rtol: float = 1e-5,
                         b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> list[Finding]:
    """`steps` compiled steps of the optimizer chain clip-by-global-norm + Adam (unirl.optim), against a
    float64 NumPy reference.

    The learning rate changes every step (as a schedule would) and enters as a tensor in `hp`.
    """
    from unirl.optim import adam, chain, clip_by_global_norm, global_norm

    adapter = load_adapter(adapter)
    ops = adapter.ops
    rng = np.random.default_rng(11)
    params = rng.standard_normal(40).astype(np.float32)
    grads = [(rng.standard_normal(40) * (0.1 if k % 2 else 3.0)).astype(np.float32) for k in range(steps)]
    lrs = [1e-2 * (1 - k / (2 * steps)) for k in range(steps)]
    optimizer = chain(clip_by_global_norm(max_norm), adam(b1, b2, eps))

    def step(p, state, g, hp):
        norm = global_norm(ops, g)
        updates, state = optimizer.update(ops, g, state, p, hp)
        return p + updates, state, norm

    compiled = adapter.compile(step)
    p = adapter.tensor(params)
    state = adapter.tree_tensor(optimizer.init(numpy_ops, params))
    norms = []
    for g, lr in zip(grads, lrs):
        p, state, norm = compiled(p, state, adapter.tensor(g), {"lr": adapter.tensor(np.float32(lr))})
        norms.append(adapter.numpy(norm))
    ref_p = params.astype(np.float64)
    m = np.zeros(40)
    v = np.zeros(40)
    ref_norms = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = g.astype(np.float64)
        n = np.sqrt((g * g).sum())
        ref_norms.append(n)
        g = g * min(1.0, max_norm / (n + 1e-6))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        ref_p = ref_p - np.float32(lr) * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    adam_state = adapter.tree_numpy(state)[1]
    return [
        compare_arrays("params", ref_p, adapter.numpy(p), rtol, 1e-6, check="optimizer"),
        compare_arrays("mu", m, adam_state.mu, rtol, 1e-7, check="optimizer"),
        compare_arrays("nu", v, adam_state.nu, rtol, 1e-9, check="optimizer"),
        compare_arrays("count", float(steps), adam_state.count, check="optimizer"),
        compare_arrays("global_norm", np.array(ref_norms), np.array(norms, np.float64), rtol, check="optimizer"),
    ]


# -- an algorithm's own loss on its own batch, across frameworks ------------------------------
def algorithm_class(algo):
    """The Algorithm class: `algo` itself, or looked up in unirl's registry (a name or "pkg.module:Class")."""
    if not isinstance(algo, str):
        return algo
    from unirl.registry import get_algorithm_class

    return get_algorithm_class(algo)


def algorithm_label(algo) -> str:
    return algo if isinstance(algo, str) else f"{algo.__module__}:{algo.__qualname__}"


def small_config(algo="PPO", num_workers: int = 1, which: str = "run_config") -> dict:
    """The algorithm's small conformance config (its ConformanceSpec's `run_config` or `curve_config`) as an
    algorithm config: `total_envs` split over `num_workers` workers."""
    spec = algorithm_class(algo).conformance
    if spec is None:
        raise ValueError(f"{algorithm_label(algo)} declares no conformance spec (`conformance = ConformanceSpec(...)`)")
    cfg = dict(getattr(spec, which) or spec.run_config)
    total = cfg.pop("total_envs", None)
    if total is not None:
        if total % num_workers:
            raise ValueError(f"{total} envs cannot be split evenly over {num_workers} workers")
        cfg.update(num_workers=num_workers, num_envs_per_worker=total // num_workers)
    return cfg


def _as_numpy(adapter, value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, (int, float, np.generic)):
        return np.asarray(value)
    return np.array(adapter.numpy(value))


@dataclass
class LossProblem:
    """One learning call an algorithm made in a real run, captured as NumPy (see `capture_problem`).

    `state` is `Policy.get_state()` just before the call: every parameter set ("params/...",
    "target_params/...") and the optimizer state ("opt/..."). The same numbers go to every adapter.
    """

    algo: Any  # a registered name, "pkg.module:Class", or the class
    config: dict  # the algorithm config the call was captured from
    kind: str  # "learn" (learn_on_batch) or "gradients" (compute_gradients)
    call_index: int  # which learning call of the run (0-based)
    state: dict
    batch: dict
    hp: dict
    captured_with: str = ""  # the framework that ran the capturing run
    #: learn_on_batch's options in the call (a policy with several learners: which ran, the updates after them)
    options: dict = field(default_factory=dict)

    def describe(self) -> str:
        rows = max((len(v) for v in self.batch.values() if np.ndim(v)), default=0)
        return (f"{algorithm_label(self.algo)} learning call {self.call_index} ({self.kind}, {rows} rows, "
                f"columns {sorted(self.batch)}, hyperparameters {sorted(self.hp)}) captured with {self.captured_with}")


#: With call -1, how many iterations capture_problem runs at most while waiting for a first learning call.
MAX_CAPTURE_ITERATIONS = 20


class _Captured(Exception):
    """Raised by the recorder to end the capturing run once the wanted call is recorded."""


def capture_problem(algo="PPO", config: dict | None = None, framework="torch", call: int = -1,
                    iterations: int = 1) -> LossProblem:
    """Run the algorithm (local backend, `config` or its small conformance config) and capture one of its own
    learning calls through `Policy.recorder`: the batch and hyperparameters it passed, as NumPy, and every
    parameter set and the optimizer state just before it.

    `call` is the index of the learn_on_batch / compute_gradients call to capture, or -1 (default) for the
    last one of the first `iterations` iterations: by then the optimizer state is not zero and the
    parameters have moved away from those that sampled the batch (PPO's ratios move and some clip).
    """
    cls = algorithm_class(algo)
    cfg = dict(small_config(algo) if config is None else config)
    cfg.update(framework=framework_spec(framework), backend="local")
    captured: dict = {}
    count = [0]

    def recorder(kind, policy, batch, hp, options):
        index = count[0]
        count[0] += 1
        if call >= 0 and index != call:
            return
        adapter = policy.adapter
        captured.update(kind=kind, index=index, state=policy.get_state(),
                        batch={k: _as_numpy(adapter, v) for k, v in batch.items()},
                        hp={k: float(_as_numpy(adapter, v)) for k, v in hp.items()}, options=dict(options))
        if call >= 0:
            raise _Captured()

    algo_obj = cls(cfg)
    try:
        algo_obj.policy.recorder = recorder
        try:
            # call -1: the last learning call of the first `iterations` iterations, or of the first iteration
            # after them that makes one (a free-running learner, as Ape-X's, may not step in iteration 1).
            done = 0
            while done < (10_000 if call >= 0 else max(iterations, MAX_CAPTURE_ITERATIONS)):
                algo_obj.train()
                done += 1
                if (count[0] > call) if call >= 0 else (done >= iterations and count[0] > 0):
                    break
        except _Captured:
            pass
    finally:
        algo_obj.policy.recorder = None
        algo_obj.stop()
    if not captured:
        raise ValueError(f"{algorithm_label(algo)} made {count[0]} learning calls (learn_on_batch or "
                         f"compute_gradients) in {done} iteration(s); nothing to capture (call {call})")
    return LossProblem(algo, cfg, captured["kind"], captured["index"], captured["state"], captured["batch"],
                       captured["hp"], framework_spec(framework), captured["options"])


_DEFAULT_PROBLEMS: dict = {}


def default_problem(algo="PPO", framework="torch") -> LossProblem:
    """`capture_problem(algo, framework=framework)`, cached per (algorithm, framework)."""
    key = (algorithm_label(algo), framework_spec(framework))
    if key not in _DEFAULT_PROBLEMS:
        _DEFAULT_PROBLEMS[key] = capture_problem(algo, framework=framework)
    return _DEFAULT_PROBLEMS[key]


def build_learner_policy(adapter, problem: LossProblem):
    """The algorithm's learner policy (its module, loss, optimizer and parameter sets, via
    `Algorithm.build_policy`) on `adapter`, loaded with the problem's captured state."""
    from unirl.policy import PolicySpec

    adapter = load_adapter(adapter)
    cls = algorithm_class(problem.algo)
    config = cls.config_class.from_dict(dict(problem.config, framework=framework_spec(adapter)))
    from unirl.multi_agent.algorithm import primary_learner_setup

    multi_agent = primary_learner_setup(config)  # a multi-agent run: its primary policy's learner
    env_spaces = None
    if multi_agent is not None:
        config, env_spaces = multi_agent
    spec = cls.policy_spec(config, env_spaces)

    class _OnThisAdapter(PolicySpec):
        def adapter(self):  # the adapter object given (it may be a plugin instance), not a new one
            return given

    given = adapter
    pinned = _OnThisAdapter(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(PolicySpec)})
    policy = cls.build_policy(config, for_learning=True, spec=pinned)
    policy.set_state(problem.state)
    return policy


def loss_and_grads(adapter, problem: LossProblem | None = None) -> dict[str, np.ndarray]:
    """The algorithm's loss, stats and unclipped gradient on the captured batch, and its whole learner state
    after one learn step (`weights_after_step`: the trained parameters; `after_step/<name>`: the optimizer
    state and the other parameter sets), as NumPy.

    Goes through `Policy.compute_gradients` and `Policy.learn_on_batch`: the compiled path that training
    uses, not a re-implementation.
    """
    adapter = load_adapter(adapter)
    problem = problem or default_problem(framework=adapter)
    policy = build_learner_policy(adapter, problem)
    grad, stats = policy.compute_gradients(dict(problem.batch), dict(problem.hp))
    out = {"loss": np.float64(stats.pop("total_loss")), "grad": grad}
    out.update({f"stats/{k}": np.float64(v) for k, v in stats.items()})
    if policy.optimizer is not None:
        policy.set_state(problem.state)
        policy.learn_on_batch(dict(problem.batch), dict(problem.hp), **problem.options)
        policy.finish_learning()
        out["weights_after_step"] = policy.get_flat_weights()
        out.update({f"after_step/{k}": np.asarray(v) for k, v in policy.get_state().items()
                    if not k.startswith("params/")})
    return out


def compare_loss_and_grads(adapter_a, adapter_b, problem: LossProblem | None = None,
                           rtol: float = 1e-5) -> dict[str, dict]:
    """Per array, how adapter_b's loss, stats, gradient and state after one step differ from adapter_a's.

    Returns {array name: Finding.as_dict()}; "ok" uses `rtol` relative to each array's scale
    (its largest magnitude; for a scalar, the larger of 1 and its magnitude), and the dict also
    carries the element-wise relative difference. An array one adapter produced and the other did
    not is a failed finding.
    """
    problem = problem or default_problem(framework=adapter_a)
    a = loss_and_grads(adapter_a, problem)
    b = loss_and_grads(adapter_b, problem)
    name_a, name_b = framework_spec(adapter_a), framework_spec(adapter_b)
    check = f"loss_and_grads {name_a} vs {name_b}"
    out = {}
    for k in list(a) + [k for k in b if k not in a]:
        if k not in a or k not in b:
            out[k] = Finding(check, k, False, math.inf, math.inf, math.inf,
                             message=f"only {name_a if k in a else name_b} produced it").as_dict()
            continue
        # A scalar (the loss, a stat) is often a small difference of large terms (a policy loss of
        # normalized advantages is near 0): it is held to rtol x max(1, its magnitude).
        atol = rtol if np.ndim(a[k]) == 0 else 0.0
        f = compare_arrays(k, a[k], b[k], rtol, atol, check=check, scale_relative=True)
        # the difference in units of the tolerance's base (1 for a scalar below 1): what `rtol` bounds
        if f.max_abs_diff == 0 or not math.isfinite(f.scale_rel_diff):
            f.details["tolerance_rel_diff"] = 0.0 if f.max_abs_diff == 0 else math.inf
        else:
            scale = f.max_abs_diff / f.scale_rel_diff
            f.details["tolerance_rel_diff"] = f.max_abs_diff / (max(scale, 1.0) if atol else scale)
        out[k] = f.as_dict()
    return out


# -- training-level checks --------------------------------------------------------------------
def _build(framework, config: dict | None, iterations: int, algo="PPO"):
    cfg = dict(small_config(algo) if config is None else config)
    cfg["framework"] = framework_spec(framework)
    algo_obj = algorithm_class(algo)(cfg)
    try:
        for _ in range(iterations):
            algo_obj.train()
    except BaseException:
        algo_obj.stop()
        raise
    return algo_obj


def count_traces(framework, iterations: int = 4, config: dict | None = None, algo="PPO") -> dict[str, int]:
    """Trace counts of an algorithm's (default PPO) compiled policy functions after `iterations` iterations.

    The learning rate follows a schedule, so it changes every iteration: a count above one
    for the learn step means a new value retraced it.
    """
    from unirl.policy import clear_compiled

    cfg = dict(small_config(algo) if config is None else config)
    cfg.setdefault("lr_schedule", [[0, 3e-3], [100_000, 1e-4]])
    clear_compiled()  # the counts are this run's own, not those of policies built before in this process
    algo_obj = _build(framework, cfg, iterations, algo)
    try:
        p = algo_obj.policy
        algo_obj.evaluate(2)  # acting on another batch size, through greedy evaluation
        counts = {name: p.adapter.trace_count(fn) for name, fn in
                  (("learn_step", p._learn_step), ("learn_steps", p._learn_steps), ("policy_out", p._policy_out), ("forward", p._forward),
                   ("unflatten", p._unflatten)) if fn is not None}
        counts["iterations"] = iterations
        return counts
    finally:
        algo_obj.stop()


def train_weights(framework, iterations: int = 3, config: dict | None = None, algo="PPO") -> np.ndarray:
    """The flat weights after `iterations` iterations of the algorithm (a fresh algorithm each call)."""
    algo_obj = _build(framework, config, iterations, algo)
    try:
        return algo_obj.flat_weights()
    finally:
        algo_obj.stop()


def check_same_run_twice(framework, iterations: int = 3, config: dict | None = None, algo="PPO") -> Finding:
    """Two identical short runs end with bit-identical weights."""
    a = train_weights(framework, iterations, config, algo)
    b = train_weights(framework, iterations, config, algo)
    return compare_arrays("weights", a, b, check=f"same_run_twice {framework_spec(framework)}")


def check_worker_count_invariance(framework, worker_counts=(1, 2, 4), num_envs: int = 8, iterations: int = 2,
                                  config: dict | None = None, algo="PPO") -> list[Finding]:
    """The same `num_envs` envs split over each worker count end with bit-identical weights.

    Each worker acts on its share of the envs (batches of num_envs / workers rows), so this
    holds only if a row's result does not depend on its batch (see `check_row_invariance`).
    """
    base = dict(small_config(algo) if config is None else config)
    weights = {}
    for n in worker_counts:
        weights[n] = train_weights(framework, iterations, dict(base, num_workers=n, num_envs_per_worker=num_envs // n),
                                   algo)
    first = worker_counts[0]
    return [compare_arrays(f"weights {first} vs {n} workers", weights[first], weights[n],
                           check=f"worker_count {framework_spec(framework)}") for n in worker_counts[1:]]


def check_checkpoint_transfer(src, dst, checkpoint_dir: str, iterations: int = 3, num_obs: int = 1000,
                              config: dict | None = None, seed: int = 0, algo="PPO") -> Finding:
    """Train with `src`, save, restore with `dst`: greedy actions on `num_obs` fixed observations agree."""
    algo_obj = _build(src, config, iterations, algo)
    try:
        path = algo_obj.save(checkpoint_dir)
        obs_dim = algo_obj.policy.module.obs_dim
        obs = np.random.default_rng(seed).standard_normal((num_obs, obs_dim)).astype(np.float32)
        want = algo_obj.compute_actions(obs)
        logits_src = algo_obj.policy.policy_outputs(obs)
    finally:
        algo_obj.stop()
    restored = algorithm_class(algo).from_checkpoint(path, framework=framework_spec(dst))
    try:
        got = restored.compute_actions(obs)
        logits_dst = restored.policy.policy_outputs(obs)
    finally:
        restored.stop()
    f = compare_arrays("greedy_actions", want, got, check=f"checkpoint {framework_spec(src)} -> {framework_spec(dst)}")
    f.details["logits"] = compare_arrays("logits", logits_src, logits_dst, 1e-5, check="checkpoint",
                                         scale_relative=True).as_dict()
    return f
