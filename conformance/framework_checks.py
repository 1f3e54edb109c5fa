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
- `check_optimizer_step(adapter, steps)` -> list[`Finding`]: the neutral Adam with global-norm
  clipping, compiled on the adapter, against a float64 NumPy reference.
- `ppo_problem(seed)` -> `PPOProblem`: fixed initial weights, batch and hyperparameters (NumPy).
- `loss_and_grads(adapter, problem)` -> dict of NumPy arrays: loss, stats, raw gradient and the
  weights after one learn step, through `Policy` (the compiled path PPO uses).
- `compare_loss_and_grads(adapter_a, adapter_b, problem)` -> dict: per array (loss, grad,
  weights_after_step, stats/...) its `Finding` as a dict (max abs / rel differences, first
  differing index, both values).
- `count_traces(framework, iterations, config)` -> dict: how often each compiled function of
  a PPO policy was traced over a few training iterations with a changing learning rate.
- `train_weights(framework, iterations, config)` -> NumPy flat weights after a short PPO run.
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

TINY_PPO = {"env": "CartPole-v1", "num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32,
            "num_epochs": 2}
"""A PPO config small enough for checks that train: 4 envs x 16 steps, 2 epochs of 2 minibatches."""


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


def check_row_invariance(adapter, batch_sizes=tuple(range(1, 601)), obs_dim: int = 4, num_outputs: int = 2,
                         seed: int = 0, shifts=tuple(range(0, 130)), shifted_sizes=(1, 2, 3, 7, 64)) -> list[Finding]:
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
    from unirl.models import ActorCritic, ModelConfig
    from unirl.policy import Policy

    adapter = load_adapter(adapter)
    module = ActorCritic(obs_dim, Categorical(num_outputs), ModelConfig())
    policy = Policy(adapter, module, module.init_params(seed))

    def forward(x):
        out = policy.forward(x)
        return out["dist_inputs"], out["values"]

    rng = np.random.default_rng(seed)
    most = max(max(batch_sizes), max(shifted_sizes))
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


def check_optimizer_step(adapter, steps: int = 5, max_norm: float = 0.5, rtol: float = 1e-5,
                         b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> list[Finding]:
    """`steps` compiled steps of clip-by-global-norm + neutral Adam, against a float64 NumPy reference.

    The learning rate changes every step (as a schedule would) and enters as a tensor.
    """
    from unirl.optim import AdamState, adam_update, clip_by_global_norm

    adapter = load_adapter(adapter)
    ops = adapter.ops
    rng = np.random.default_rng(11)
    params = rng.standard_normal(40).astype(np.float32)
    grads = [(rng.standard_normal(40) * (0.1 if k % 2 else 3.0)).astype(np.float32) for k in range(steps)]
    lrs = [1e-2 * (1 - k / (2 * steps)) for k in range(steps)]

    def step(p, state, g, lr):
        g, norm = clip_by_global_norm(ops, g, max_norm)
        updates, state = adam_update(ops, g, state, lr, b1, b2, eps)
        return p + updates, state, norm

    compiled = adapter.compile(step)
    p = adapter.tensor(params)
    state = adapter.tree_tensor(AdamState(np.float32(0), np.zeros(40, np.float32), np.zeros(40, np.float32)))
    norms = []
    for g, lr in zip(grads, lrs):
        p, state, norm = compiled(p, state, adapter.tensor(g), adapter.tensor(np.float32(lr)))
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
    state = adapter.tree_numpy(state)
    return [
        compare_arrays("params", ref_p, adapter.numpy(p), rtol, 1e-6, check="optimizer"),
        compare_arrays("mu", m, state.mu, rtol, 1e-7, check="optimizer"),
        compare_arrays("nu", v, state.nu, rtol, 1e-9, check="optimizer"),
        compare_arrays("count", float(steps), state.count, check="optimizer"),
        compare_arrays("global_norm", np.array(ref_norms), np.array(norms, np.float64), rtol, check="optimizer"),
    ]


# -- the PPO loss across frameworks -----------------------------------------------------------
@dataclass
class PPOProblem:
    """A fixed PPO minibatch problem, all NumPy: the same numbers go to every adapter."""

    model: Any
    dist: Any
    params: dict
    batch: dict
    hp: dict
    grad_clip: float = 0.0


def ppo_problem(seed: int = 0, rows: int = 128, obs_dim: int = 4, num_actions: int = 2,
                hidden_sizes=(64, 64)) -> PPOProblem:
    """Initial weights from the model's seeded init, a random batch whose ratios partly clip."""
    from unirl import sample_batch as sb
    from unirl.distributions import Categorical
    from unirl.models import ActorCriticMLP, ModelConfig

    rng = np.random.default_rng(seed)
    model = ActorCriticMLP(obs_dim, num_actions, ModelConfig(hidden_sizes=tuple(hidden_sizes)))
    params = model.init_params(seed)
    # a policy head far from uniform, so that ratios move and some clip
    params["pi/out/w"] = (rng.standard_normal(params["pi/out/w"].shape) * 0.5).astype(np.float32)
    batch = {
        sb.OBS: rng.standard_normal((rows, obs_dim)).astype(np.float32),
        sb.ACTIONS: rng.integers(0, num_actions, rows).astype(np.int64),
        sb.LOGP: np.log(rng.uniform(0.2, 0.8, rows)).astype(np.float32),
        sb.ADVANTAGES: rng.standard_normal(rows).astype(np.float32),
        sb.VALUE_TARGETS: rng.standard_normal(rows).astype(np.float32),
    }
    hp = {"lr": 2e-3, "clip_param": 0.2, "vf_loss_coeff": 0.5, "entropy_coeff": 0.01, "normalize_advantages": 1.0}
    return PPOProblem(model, Categorical(num_actions), params, batch, hp)


def _ppo_loss_fn():
    from unirl.registry import get_algorithm_class

    return get_algorithm_class("PPO").loss


def loss_and_grads(adapter, problem: PPOProblem | None = None, loss=None) -> dict[str, np.ndarray]:
    """Loss, stats, the unclipped gradient and the weights after one learn step, as NumPy.

    Goes through `Policy.compute_gradients` and `Policy.learn_on_batch`: the compiled path
    that training uses, not a re-implementation.
    """
    from unirl.policy import Policy

    adapter = load_adapter(adapter)
    problem = problem or ppo_problem()
    policy = Policy(adapter, problem.model, problem.dist, problem.params, loss=loss or _ppo_loss_fn(),
                    grad_clip=problem.grad_clip)
    grad, stats = policy.compute_gradients(dict(problem.batch), dict(problem.hp))
    out = {"loss": np.float64(stats.pop("total_loss")), "grad": grad}
    out.update({f"stats/{k}": np.float64(v) for k, v in stats.items()})
    policy.learn_on_batch(dict(problem.batch), dict(problem.hp))
    out["weights_after_step"] = policy.get_flat_weights()
    return out


def compare_loss_and_grads(adapter_a, adapter_b, problem: PPOProblem | None = None, rtol: float = 1e-5,
                           loss=None) -> dict[str, dict]:
    """Per array, how adapter_b's loss, gradient and stepped weights differ from adapter_a's.

    Returns {array name: Finding.as_dict()}; "ok" uses `rtol` relative to each array's scale
    (its largest magnitude), and the dict also carries the element-wise relative difference.
    """
    problem = problem or ppo_problem()
    a = loss_and_grads(adapter_a, problem, loss)
    b = loss_and_grads(adapter_b, problem, loss)
    name_a, name_b = framework_spec(adapter_a), framework_spec(adapter_b)
    out = {}
    for k in a:
        f = compare_arrays(k, a[k], b[k], rtol, 0.0, check=f"loss_and_grads {name_a} vs {name_b}",
                           scale_relative=True)
        out[k] = f.as_dict()
    return out


# -- training-level checks --------------------------------------------------------------------
def _build(framework, config: dict | None, iterations: int):
    import unirl

    cfg = dict(TINY_PPO if config is None else config)
    cfg["framework"] = framework_spec(framework)
    algo = unirl.build("PPO", cfg)
    try:
        for _ in range(iterations):
            algo.train()
    except BaseException:
        algo.stop()
        raise
    return algo


def count_traces(framework, iterations: int = 4, config: dict | None = None) -> dict[str, int]:
    """Trace counts of a PPO policy's compiled functions after `iterations` iterations.

    The learning rate follows a schedule, so it changes every iteration: a count above one
    for the learn step means a new value retraced it.
    """
    cfg = dict(TINY_PPO if config is None else config)
    cfg.setdefault("lr_schedule", [[0, 3e-3], [100_000, 1e-4]])
    algo = _build(framework, cfg, iterations)
    try:
        p = algo.policy
        algo.evaluate(2)  # acting on another batch size, through greedy evaluation
        counts = {name: p.adapter.trace_count(fn) for name, fn in
                  (("learn_step", p._learn_step), ("policy_out", p._policy_out), ("forward", p._forward),
                   ("unflatten", p._unflatten)) if fn is not None}
        counts["iterations"] = iterations
        return counts
    finally:
        algo.stop()


def train_weights(framework, iterations: int = 3, config: dict | None = None) -> np.ndarray:
    """The flat weights after `iterations` PPO iterations (a fresh algorithm each call)."""
    algo = _build(framework, config, iterations)
    try:
        return algo.policy.get_flat_weights()
    finally:
        algo.stop()


def check_same_run_twice(framework, iterations: int = 3, config: dict | None = None) -> Finding:
    """Two identical short runs end with bit-identical weights."""
    a = train_weights(framework, iterations, config)
    b = train_weights(framework, iterations, config)
    return compare_arrays("weights", a, b, check=f"same_run_twice {framework_spec(framework)}")


def check_worker_count_invariance(framework, worker_counts=(1, 2, 4), num_envs: int = 8, iterations: int = 2,
                                  config: dict | None = None) -> list[Finding]:
    """The same `num_envs` envs split over each worker count end with bit-identical weights.

    Each worker acts on its share of the envs (batches of num_envs / workers rows), so this
    holds only if a row's result does not depend on its batch (see `check_row_invariance`).
    """
    base = dict(TINY_PPO if config is None else config)
    weights = {}
    for n in worker_counts:
        weights[n] = train_weights(framework, iterations, dict(base, num_workers=n, num_envs_per_worker=num_envs // n))
    first = worker_counts[0]
    return [compare_arrays(f"weights {first} vs {n} workers", weights[first], weights[n],
                           check=f"worker_count {framework_spec(framework)}") for n in worker_counts[1:]]


def check_checkpoint_transfer(src, dst, checkpoint_dir: str, iterations: int = 3, num_obs: int = 1000,
                              config: dict | None = None, seed: int = 0) -> Finding:
    """Train with `src`, save, restore with `dst`: greedy actions on `num_obs` fixed observations agree."""
    from unirl.registry import get_algorithm_class

    algo = _build(src, config, iterations)
    try:
        path = algo.save(checkpoint_dir)
        obs = np.random.default_rng(seed).standard_normal((num_obs, 4)).astype(np.float32)
        want = algo.compute_actions(obs)
        logits_src = algo.policy.policy_outputs(obs)
    finally:
        algo.stop()
    restored = get_algorithm_class("PPO").from_checkpoint(path, framework=framework_spec(dst))
    try:
        got = restored.compute_actions(obs)
        logits_dst = restored.policy.policy_outputs(obs)
    finally:
        restored.stop()
    f = compare_arrays("greedy_actions", want, got, check=f"checkpoint {framework_spec(src)} -> {framework_spec(dst)}")
    f.details["logits"] = compare_arrays("logits", logits_src, logits_dst, 1e-5, check="checkpoint",
                                         scale_relative=True).as_dict()
    return f
