"""GAE: the vectorized recursion equals a plain per-env Python loop bit for bit, truncation included."""
import numpy as np

from unirl import sample_batch as sb
from unirl.postprocessing import compute_gae, next_values


def gae_plain_loop(rewards, values, next_vals, dones, gamma, lam):
    gamma, lam = np.float32(gamma), np.float32(lam)
    T, N = rewards.shape
    adv = np.zeros((T, N), np.float32)
    for n in range(N):
        last = np.float32(0.0)
        for t in reversed(range(T)):
            delta = rewards[t, n] + gamma * next_vals[t, n] - values[t, n]
            last = delta + gamma * lam * np.float32(0.0 if dones[t, n] else 1.0) * last
            adv[t, n] = last
    return adv


def random_batch(rng, T=17, N=5):
    terms = rng.random((T, N)) < 0.1
    truncs = (rng.random((T, N)) < 0.05) & ~terms
    trunc_index = np.flatnonzero(truncs.reshape(-1)).astype(np.int64)
    batch = sb.SampleBatch({sb.REWARDS: rng.standard_normal((T, N)).astype(np.float32),
                            sb.TERMINATEDS: terms, sb.TRUNCATEDS: truncs, sb.TRUNC_INDEX: trunc_index})
    values = rng.standard_normal((T, N)).astype(np.float32)
    boot = rng.standard_normal(N).astype(np.float32)
    trunc_vals = rng.standard_normal(len(trunc_index)).astype(np.float32)
    return batch, values, boot, trunc_vals


def test_gae_matches_plain_loop_exactly():
    rng = np.random.default_rng(0)
    for _ in range(20):
        batch, values, boot, trunc_vals = random_batch(rng)
        nxt = next_values(batch, values, boot, trunc_vals)
        dones = batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS]
        adv, targets = compute_gae(batch[sb.REWARDS], values, nxt, batch[sb.TERMINATEDS], dones, 0.98, 0.8)
        expected = gae_plain_loop(batch[sb.REWARDS], values, nxt, dones, 0.98, 0.8)
        np.testing.assert_array_equal(adv, expected)
        np.testing.assert_array_equal(targets, expected + values)


def test_next_values_bootstrap_rules():
    rng = np.random.default_rng(1)
    batch, values, boot, trunc_vals = random_batch(rng)
    nxt = next_values(batch, values, boot, trunc_vals)
    T, N = values.shape
    k = 0
    for t in range(T):
        for n in range(N):
            if batch[sb.TERMINATEDS][t, n]:
                assert nxt[t, n] == 0.0
            elif batch[sb.TRUNCATEDS][t, n]:
                assert nxt[t, n] == trunc_vals[k]
                k += 1
            elif t == T - 1:
                assert nxt[t, n] == boot[n]
            else:
                assert nxt[t, n] == values[t + 1, n]
    assert k == len(trunc_vals)


def test_gae_hand_computed():
    # one env, three steps, terminal at the end: gamma 0.5, lambda 0.5
    r = np.array([[1.0], [2.0], [3.0]], np.float32)
    v = np.array([[0.5], [1.0], [1.5]], np.float32)
    nxt = np.array([[1.0], [1.5], [0.0]], np.float32)
    dones = np.array([[False], [False], [True]])
    adv, _ = compute_gae(r, v, nxt, dones, dones, 0.5, 0.5)
    d2 = 3.0 - 1.5
    d1 = 2.0 + 0.5 * 1.5 - 1.0
    d0 = 1.0 + 0.5 * 1.0 - 0.5
    np.testing.assert_allclose(adv[:, 0], [d0 + 0.25 * (d1 + 0.25 * d2), d1 + 0.25 * d2, d2], rtol=1e-6)
