"""The neutral optimizer: Adam and global-norm clipping as pure functions on ops, in optax's init/update shape.

Torch, TensorFlow and JAX run exactly this math, so one update rule holds on all three; the
NumPy ops make it the reference in tests.
"""
from __future__ import annotations

from typing import NamedTuple


class AdamState(NamedTuple):
    count: object  # float32 scalar tensor: steps taken
    mu: object  # first moment, same shape as the parameters
    nu: object  # second moment


def adam_init(ops, params) -> AdamState:
    zeros = ops.zeros_like(params)
    return AdamState(ops.constant(0.0), zeros, ops.zeros_like(params))


def adam_update(ops, grads, state: AdamState, lr, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """(updates to add to the parameters, new state) for one Adam step with learning rate `lr`."""
    count = state.count + 1.0
    mu = b1 * state.mu + (1.0 - b1) * grads
    nu = b2 * state.nu + (1.0 - b2) * ops.square(grads)
    mu_hat = mu / (1.0 - ops.constant(b1) ** count)
    nu_hat = nu / (1.0 - ops.constant(b2) ** count)
    updates = -lr * mu_hat / (ops.sqrt(nu_hat) + eps)
    return updates, AdamState(count, mu, nu)


def global_norm(ops, grads):
    return ops.sqrt(ops.sum(ops.square(grads)))


def clip_by_global_norm(ops, grads, max_norm: float):
    """(clipped gradient, norm before clipping); max_norm <= 0 disables clipping."""
    norm = global_norm(ops, grads)
    if max_norm <= 0:
        return grads, norm
    scale = ops.minimum(ops.constant(1.0), max_norm / (norm + 1e-6))
    return grads * scale, norm


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
