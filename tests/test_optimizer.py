"""The neutral Adam and gradient clipping against a NumPy reference written independently (float64)."""
import numpy as np
import pytest

from unirl.ops import numpy_ops
from unirl.optim import adam_init, adam_update, clip_by_global_norm, piecewise_linear


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
    state = adam_init(numpy_ops, params)
    p = params.copy()
    for g in grads_seq:
        updates, state = adam_update(numpy_ops, g, state, np.float32(1e-2))
        p = p + updates
    np.testing.assert_allclose(p, reference_adam(params, grads_seq, 1e-2), rtol=1e-5, atol=1e-6)
    assert float(state.count) == 25


def test_clip_by_global_norm():
    g = np.array([3.0, 4.0], np.float32)  # norm 5
    clipped, norm = clip_by_global_norm(numpy_ops, g, 1.0)
    assert float(norm) == pytest.approx(5.0)
    np.testing.assert_allclose(clipped, [0.6, 0.8], rtol=1e-5)
    unclipped, _ = clip_by_global_norm(numpy_ops, g, 10.0)
    np.testing.assert_array_equal(unclipped, g)


def test_piecewise_linear_schedule():
    sched = [[0, 1.0], [100, 0.0]]
    assert piecewise_linear(sched, 50, 9.0) == pytest.approx(0.5)
    assert piecewise_linear(sched, 1000, 9.0) == 0.0
    assert piecewise_linear(None, 1000, 9.0) == 9.0
