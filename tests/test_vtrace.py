"""V-trace against the paper's definition (a per-timestep double loop in float64) and the on-policy n-step target.

Espeholt et al. 2018, eq. (1): v_s = V(x_s) + sum_{t=s}^{s+n-1} gamma^{t-s} (prod_{i=s}^{t-1} c_i) delta_t V,
delta_t V = rho_t (r_t + gamma V(x_{t+1}) - V(x_t)); the implementation runs the backward
recursion in float32, so the two agree to float32 rounding (rtol 1e-5), not bit for bit.
"""
import numpy as np
import pytest

from unirl.vtrace import vtrace


def paper_vtrace(log_rhos, rewards, values, next_values, dones, gamma, rho_bar, c_bar):
    """The definition, one env and one start step at a time, in float64, with episode ends cutting the sum."""
    T, N = rewards.shape
    rhos = np.exp(log_rhos.astype(np.float64))
    vs = np.zeros((T, N))
    adv = np.zeros((T, N))
    for n in range(N):
        for s in range(T):
            total, weight = 0.0, 1.0
            for t in range(s, T):
                rho_t = min(rho_bar, rhos[t, n])
                total += weight * rho_t * (rewards[t, n] + gamma * next_values[t, n] - values[t, n])
                if dones[t, n]:
                    break
                weight *= gamma * min(c_bar, rhos[t, n])
            vs[s, n] = values[s, n] + total
    for n in range(N):
        for s in range(T):
            v_next = vs[s + 1, n] if s + 1 < T and not dones[s, n] else next_values[s, n]
            adv[s, n] = min(rho_bar, rhos[s, n]) * (rewards[s, n] + gamma * v_next - values[s, n])
    return vs, adv


def random_fragment(rng, T=20, N=3, with_dones=True):
    rewards = rng.standard_normal((T, N)).astype(np.float32)
    values = rng.standard_normal((T, N)).astype(np.float32)
    bootstrap = rng.standard_normal(N).astype(np.float32)
    terms = (rng.random((T, N)) < 0.1) if with_dones else np.zeros((T, N), bool)
    truncs = ((rng.random((T, N)) < 0.05) & ~terms) if with_dones else np.zeros((T, N), bool)
    next_values = np.concatenate([values[1:], bootstrap[None]], axis=0)
    next_values = np.where(terms, 0.0, next_values)
    # After a truncation the next state is the episode's final observation: a value of its own.
    next_values = np.where(truncs, rng.standard_normal((T, N)), next_values).astype(np.float32)
    log_rhos = (rng.standard_normal((T, N)) * 0.7).astype(np.float32)
    return log_rhos, rewards, values, next_values, terms | truncs


@pytest.mark.parametrize("rho_bar,c_bar", [(1.0, 1.0), (2.0, 0.5), (0.8, 1.5), (100.0, 100.0)])
@pytest.mark.parametrize("with_dones", [False, True])
def test_matches_paper_definition(rho_bar, c_bar, with_dones):
    rng = np.random.default_rng(int(rho_bar * 10 + c_bar * 100) + with_dones)
    frag = random_fragment(rng, with_dones=with_dones)
    vs, adv = vtrace(*frag, gamma=0.97, rho_bar=rho_bar, c_bar=c_bar)
    ref_vs, ref_adv = paper_vtrace(*frag, gamma=0.97, rho_bar=rho_bar, c_bar=c_bar)
    assert vs.dtype == np.float32 and adv.dtype == np.float32
    np.testing.assert_allclose(vs, ref_vs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv, ref_adv, rtol=1e-5, atol=1e-5)


def test_clipping_is_active():
    """Large importance weights are clipped: the clipped result differs from the unclipped one."""
    frag = list(random_fragment(np.random.default_rng(5)))
    frag[0] = np.abs(frag[0]) + 0.5  # every rho > 1
    clipped, _ = vtrace(*frag, gamma=0.9, rho_bar=1.0, c_bar=1.0)
    unclipped, _ = vtrace(*frag, gamma=0.9, rho_bar=1e9, c_bar=1e9)
    assert not np.allclose(clipped, unclipped)


@pytest.mark.parametrize("with_dones", [False, True])
def test_on_policy_is_the_n_step_return(with_dones):
    """pi = mu (log rho = 0), rho_bar, c_bar >= 1: v_s = sum_k gamma^k r_{s+k} + gamma^n V(x_{s+n}), the n-step
    Bellman target to the fragment's end (or the episode's end), and the advantage is v_s - V(x_s)."""
    rng = np.random.default_rng(0)
    log_rhos, rewards, values, next_values, dones = random_fragment(rng, T=15, N=4, with_dones=with_dones)
    gamma = 0.95
    vs, adv = vtrace(np.zeros_like(log_rhos), rewards, values, next_values, dones, gamma, 1.0, 1.0)
    T, N = rewards.shape
    expected = np.zeros((T, N))
    for n in range(N):
        for s in range(T):
            ret, disc = 0.0, 1.0
            for t in range(s, T):
                ret += disc * rewards[t, n]
                disc *= gamma
                if dones[t, n] or t == T - 1:
                    ret += disc * next_values[t, n]
                    break
            expected[s, n] = ret
    np.testing.assert_allclose(vs, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(adv, vs - values, rtol=1e-5, atol=1e-5)
