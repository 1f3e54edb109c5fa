"""The neutral optimizer: pure gradient transformations on ops, chained, in optax's init/update shape.

A transformation is a pair of pure functions, `init(ops, params) -> state` and
`update(ops, updates, state, params, hp) -> (updates, state)`, where `params` is the flat
parameter vector and `hp` the step's hyperparameters as scalar tensors (the learning rate
comes from `hp["lr"]`, so a schedule computed on the driver never forces a recompile).
`chain(...)` composes them. Torch, TensorFlow and JAX run exactly this math, so one update
rule holds on all three; the NumPy ops make it the reference in tests.

    optimizer = chain(clip_by_global_norm(0.5), adam())
    state = optimizer.init(ops, flat)
    updates, state = optimizer.update(ops, grad, state, flat, hp)
    flat = flat + updates
"""
from __future__ import annotations

from typing import Callable, NamedTuple


class GradientTransformation(NamedTuple):
    """init(ops, params) -> state; update(ops, updates, state, params, hp) -> (updates, state)."""

    init: Callable
    update: Callable


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none (clipping, weight decay, SGD)."""


class AdamState(NamedTuple):
    """Adam's state: the step count and the first and second moments of the gradient."""

    count: object  # float32 scalar tensor: steps taken
    mu: object  # first moment, same shape as the parameters
    nu: object  # second moment


def global_norm(ops, grads):
    """The L2 norm of the flat gradient vector `grads`, on the given ops."""
    return ops.sqrt(ops.sum(ops.square(grads)))


def _no_state(ops, params):
    return EmptyState()


def clip_by_global_norm(max_norm: float) -> GradientTransformation:
    """Scale the updates down to global norm `max_norm` (0 or less: unchanged)."""

    def update(ops, updates, state, params, hp):
        if max_norm <= 0:
            return updates, state
        norm = global_norm(ops, updates)
        scale = ops.minimum(ops.constant(1.0), max_norm / (norm + 1e-6))
        return updates * scale, state

    return GradientTransformation(_no_state, update)


def adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> GradientTransformation:
    """Adam (Kingma and Ba 2015) with the step size `hp["lr"]`: the updates are to be added."""

    def init(ops, params):
        return AdamState(ops.constant(0.0), ops.zeros_like(params), ops.zeros_like(params))

    def update(ops, grads, state, params, hp):
        count = state.count + 1.0
        mu = b1 * state.mu + (1.0 - b1) * grads
        nu = b2 * state.nu + (1.0 - b2) * ops.square(grads)
        mu_hat = mu / (1.0 - ops.constant(b1) ** count)
        nu_hat = nu / (1.0 - ops.constant(b2) ** count)
        return -hp["lr"] * mu_hat / (ops.sqrt(nu_hat) + eps), AdamState(count, mu, nu)

    return GradientTransformation(init, update)


def add_decayed_weights(weight_decay: float) -> GradientTransformation:
    """L2 weight decay: add `weight_decay * params` to the gradient (before Adam: coupled decay)."""

    def update(ops, updates, state, params, hp):
        if weight_decay == 0:
            return updates, state
        return updates + weight_decay * params, state

    return GradientTransformation(_no_state, update)


def sgd() -> GradientTransformation:
    """Plain gradient descent with the step size `hp["lr"]`."""

    def update(ops, grads, state, params, hp):
        return -hp["lr"] * grads, state

    return GradientTransformation(_no_state, update)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """The transformations applied in order; the state is a tuple of theirs."""

    def init(ops, params):
        return tuple(t.init(ops, params) for t in transforms)

    def update(ops, updates, state, params, hp):
        new_state = []
        for t, s in zip(transforms, state):
            updates, s = t.update(ops, updates, s, params, hp)
            new_state.append(s)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def default_optimizer(grad_clip: float = 0.0, weight_decay: float = 0.0) -> GradientTransformation:
    """Weight decay, then clipping by global norm, then Adam: what the algorithms use unless they say otherwise."""
    parts = []
    if weight_decay:
        parts.append(add_decayed_weights(weight_decay))
    if grad_clip > 0:
        parts.append(clip_by_global_norm(grad_clip))
    parts.append(adam())
    return chain(*parts)


def piecewise_linear(schedule, t: float, default: float) -> float:
    """Value of an RLlib-style schedule [[t0, v0], [t1, v1], ...] at timestep t (constant outside)."""
    if not schedule:
        return float(default)
    pts = sorted((float(a), float(b)) for a, b in schedule)
    if t <= pts[0][0]:
        return pts[0][1]
    for (t0, v0), (t1, v1) in zip(pts, pts[1:]):
        if t <= t1:
            return v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return pts[-1][1]


def linear_schedule(t: int, start: float, end: float, duration: int) -> float:
    """start at t = 0, moving linearly to end at t = duration, end afterwards (end at once if duration <= 0)."""
    if duration <= 0:
        return end
    return piecewise_linear([[0, start], [duration, end]], t, end)
