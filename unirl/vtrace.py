"""V-trace (Espeholt et al. 2018): off-policy corrected value targets and policy-gradient advantages, in NumPy.

For a time-major fragment [T, N] acted by a behaviour policy mu and learned by the target
policy pi, with rho_t = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t)) and c_t = min(c_bar, pi/mu):

    delta_t = rho_t * (r_t + gamma * V(x_{t+1}) - V(x_t))
    v_t     = V(x_t) + delta_t + gamma * c_t * (v_{t+1} - V(x_{t+1}))        (backwards over t)
    A_t     = rho_t * (r_t + gamma * v_{t+1} - V(x_t))                      (policy-gradient advantage)

Episode ends cut the recursion: `next_values` holds V(x_{t+1}) as the next state really is (0
after a terminal state, V(final obs) after a truncation, V(bootstrap obs) after the last step),
and there v_{t+1} is taken as that value. Everything is a constant for the loss (no gradient
flows through the targets), so computing it in NumPy on the learner loses nothing.
"""
from __future__ import annotations

import numpy as np


def vtrace(log_rhos: np.ndarray, rewards: np.ndarray, values: np.ndarray, next_values: np.ndarray,
           dones: np.ndarray, gamma: float, rho_bar: float = 1.0, c_bar: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(v-trace targets vs, policy-gradient advantages), float32 [T, N].

    log_rhos: log pi(a|x) - log mu(a|x); values: V(x_t); next_values: V(x_{t+1}) as above;
    dones: the episode ended at step t (terminated or truncated), which cuts the trace.
    """
    gamma = np.float32(gamma)
    rhos = np.exp(log_rhos.astype(np.float32))
    clipped_rhos = np.minimum(np.float32(rho_bar), rhos)
    cs = np.minimum(np.float32(c_bar), rhos)
    not_done = (~np.asarray(dones, bool)).astype(np.float32)
    values = values.astype(np.float32)
    next_values = next_values.astype(np.float32)
    deltas = clipped_rhos * (rewards + gamma * next_values - values)
    T = values.shape[0]
    vs_minus_v = np.zeros_like(values)
    acc = np.zeros(values.shape[1:], np.float32)
    for t in range(T - 1, -1, -1):
        acc = deltas[t] + gamma * cs[t] * not_done[t] * acc
        vs_minus_v[t] = acc
    vs = vs_minus_v + values
    # v_{t+1}: the next step's target inside an episode, the next state's value at its end.
    vs_next = next_values.copy()
    vs_next[:-1] = np.where(not_done[:-1] > 0, vs[1:], next_values[:-1])
    pg_advantages = clipped_rhos * (rewards + gamma * vs_next - values)
    return vs.astype(np.float32), pg_advantages.astype(np.float32)
