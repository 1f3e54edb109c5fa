"""The neutral Adam and gradient clipping against a NumPy reference written independently (float64)."""
import numpy as np
import pytest

from unirl.ops import numpy_ops
from unirl.optim import adam, add_decayed_weights, chain, clip_by_global_norm, default_optimizer, piecewise_linear


def reference_adam(params, grads_seq, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = np.zeros_like(params, np.float64)
    v = np.zeros_like(params, np.float64)
    p = params.astype(np.float64)
    for t, g in enumerate(grads_seq, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def test_adam_matches_reference():
    rng = np.random.default_rng(0)
    params = rng.standard_normal(50).astype(np.float32)
    grads_seq = [rng.standard_normal(50).astype(np.float32) for _ in range(25)]
    opt = adam()
    state = opt.init(numpy_ops, params)
    p = params.copy()
    for g in grads_seq:
        updates, state = opt.update(numpy_ops, g, state, p, {"lr": np.float32(1e-2)})
        p = p + updates
    np.testing.assert_allclose(p, reference_adam(params, grads_seq, 1e-2), rtol=1e-5, atol=1e-6)
    assert float(state.count) == 25


def test_clip_by_global_norm():
    g = np.array([3.0, 4.0], np.float32)  # norm 5
    clipped, _ = clip_by_global_norm(1.0).update(numpy_ops, g, (), g, {})
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-5)
    unclipped, _ = clip_by_global_norm(10.0).update(numpy_ops, g, (), g, {})
    np.testing.assert_array_equal(unclipped, g)


def test_chain_applies_in_order_and_keeps_each_state():
    """decay -> clip -> adam: the chain's update equals the three applied by hand, bit for bit."""
    rng = np.random.default_rng(1)
    p = rng.standard_normal(20).astype(np.float32)
    g = (10 * rng.standard_normal(20)).astype(np.float32)
    hp = {"lr": np.float32(3e-3)}
    opt = chain(add_decayed_weights(0.1), clip_by_global_norm(0.5), adam())
    updates, state = opt.update(numpy_ops, g, opt.init(numpy_ops, p), p, hp)
    by_hand = g + 0.1 * p
    by_hand = by_hand * min(np.float32(1.0), 0.5 / (np.sqrt(np.sum(np.square(by_hand))) + 1e-6))
    a = adam()
    expected, adam_state = a.update(numpy_ops, by_hand, a.init(numpy_ops, p), p, hp)
    np.testing.assert_array_equal(updates, expected)
    assert len(state) == 3 and float(state[2].count) == 1.0
    np.testing.assert_array_equal(state[2].mu, adam_state.mu)


def test_default_optimizer_parts():
    assert len(default_optimizer(0.5).init(numpy_ops, np.zeros(3, np.float32))) == 2
    assert len(default_optimizer(0.0).init(numpy_ops, np.zeros(3, np.float32))) == 1
    assert len(default_optimizer(0.5, weight_decay=1e-4).init(numpy_ops, np.zeros(3, np.float32))) == 3


def test_piecewise_linear_schedule():
    sched = [[0, 1.0], [100, 0.0]]
    assert piecewise_linear(sched, 50, 9.0) == pytest.approx(0.5)
    assert piecewise_linear(sched, 1000, 9.0) == 0.0
    assert piecewise_linear(None, 1000, 9.0) == 9.0
