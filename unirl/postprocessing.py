"""Trajectory postprocessing in NumPy: bootstrapped next values and GAE over time-major [T, N] batches."""
from __future__ import annotations

import numpy as np

from unirl import sample_batch as sb


def next_values(batch: sb.SampleBatch, values: np.ndarray, bootstrap_values: np.ndarray,
                trunc_values: np.ndarray) -> np.ndarray:
    """V(s_{t+1}) for every step: 0 after a terminal state, V(final obs) after a truncation."""
    T, N = values.shape
    nxt = np.empty_like(values)
    nxt[:-1] = values[1:]
    nxt[-1] = bootstrap_values
    nxt = np.where(batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS], np.float32(0.0), nxt)
    if len(batch[sb.TRUNC_INDEX]):
        flat = nxt.reshape(-1)
        flat[batch[sb.TRUNC_INDEX]] = trunc_values
    return nxt


def compute_gae(rewards: np.ndarray, values: np.ndarray, next_vals: np.ndarray, terminateds: np.ndarray,
                dones: np.ndarray, gamma: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(advantages, value targets), float32 [T, N], by the GAE recursion run backwards over time.

    `next_vals` are already zero after terminal states; `dones` (terminated or truncated) cut
    the recursion at episode ends.
    """
    gamma = np.float32(gamma)
    lam = np.float32(lam)
    T = rewards.shape[0]
    adv = np.zeros_like(values, dtype=np.float32)
    not_done = (~dones).astype(np.float32)
    last = np.zeros(values.shape[1:], np.float32)
    for t in range(T - 1, -1, -1):
        delta = rewards[t] + gamma * next_vals[t] - values[t]
        last = delta + gamma * lam * not_done[t] * last
        adv[t] = last
    return adv, (adv + values).astype(np.float32)


def actor_critic_rows(policy, batch: sb.SampleBatch, gamma: float, lam: float) -> dict[str, np.ndarray]:
    """Flat rows [T * N] for an actor-critic loss, from one forward pass on the learner.

    obs, actions, vf_preds, advantages and value_targets (GAE; lam = 1 gives n-step returns), and
    `dist_inputs` of every step (for behaviour log-probabilities). The pass covers the batch's
    observations, its bootstrap observations and the final observations of truncated episodes
    (bootstrapped, not treated as terminal); a recurrent module's rows come as sequences instead (in
    (env, time) order, with columns STATE_IN and RESETS: unirl.recurrent). Computed over the batch joined in global env order,
    the rows are a function of the trajectories alone, whatever the split of envs over workers.
    """
    T, N = batch.num_steps, batch.num_envs
    obs = batch[sb.OBS].reshape((T * N,) + batch[sb.OBS].shape[2:])
    recurrent = getattr(policy.module, "recurrent", False)
    if recurrent:  # each env's steps replayed from its stored state (unirl.recurrent)
        from unirl import recurrent as rnn

        inputs, values, boot, trunc, states, resets = rnn.replay_outputs(policy, batch)
    else:
        k = len(batch[sb.TRUNC_INDEX])
        out = policy.forward(np.concatenate([obs, batch[sb.BOOTSTRAP_OBS], batch[sb.TRUNC_OBS]], axis=0))
        inputs, values = out["dist_inputs"][:T * N], out["values"]
        boot, trunc = values[T * N:T * N + N], values[T * N + N:T * N + N + k]
    v = values[:T * N].reshape(T, N)
    nxt = next_values(batch, v, boot, trunc)
    dones = batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS]
    adv, targets = compute_gae(batch[sb.REWARDS], v, nxt, batch[sb.TERMINATEDS], dones, gamma, lam)
    actions = batch[sb.ACTIONS].reshape((T * N,) + batch[sb.ACTIONS].shape[2:])
    rows = {sb.OBS: obs, sb.ACTIONS: actions, sb.VF_PREDS: v.reshape(-1), sb.ADVANTAGES: adv.reshape(-1),
            sb.VALUE_TARGETS: targets.reshape(-1), "dist_inputs": inputs}
    if recurrent:  # the learner's sequences, with the state at each one's start
        rows = rnn.to_sequences(rows, states, resets, rnn.sequence_length(policy.module, T))
    return rows
