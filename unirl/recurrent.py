"""Memory: a recurrent actor-critic's rollouts and learner sequences (the module, an LSTM or GRU after the torso, is
unirl.models.RecurrentActorCritic).

The cell is written once on the neutral ops, as a per-step function: acting runs one step per env step
(the worker keeps each env's state, zeros at episode starts, and saves it with the env); the learner's
postprocessing replays each env's steps from the state the worker stored at the batch's start; the loss
runs the same cell over whole sequences. Every product is the adapters' row-blocked matmul, so a row's
bits never depend on its batch: the same env's states and outputs whatever the split of envs over
workers, the batch a sequence lands in, or the framework's compiler.

Sequences are `max_seq_len` consecutive steps of one env (the rollout length is a multiple of it), each
starting from the state recomputed at its first step; an episode that starts inside a sequence zeroes
the state there (column RESETS), which is the same computation as cutting the sequence at the episode's
start and padding, without padded rows: every loss's plain means stay exact, and the learner's shapes
are fixed by the config. Minibatches are whole sequences (Policy.learn_epochs).
"""
from __future__ import annotations

import numpy as np

from unirl import sample_batch as sb
from unirl.errors import UnirlError
from unirl.models import recurrent_step


def step_outputs(policy, obs: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
    """module.step for a batch of envs, compiled once per shape, as NumPy ({"dist_inputs", "values", "state"}). The
    rows are zero-padded to the policy's multiple (64), as every acting and learner pass is (Policy.forward): the
    compiled frameworks see a bounded set of shapes, and a row's bits do not depend on how many envs share the
    call (a worker's, or all of them on the learner; conformance level 1 checks it)."""
    return policy.call(recurrent_step, {"obs": np.asarray(obs, np.float32), "state": np.asarray(state, np.float32)},
                       pad_rows=True)


def sequence_length(module, rollout_length: int) -> int:
    """The learner's sequence length for this rollout length: min(max_seq_len, rollout length), dividing it."""
    length = min(module.max_seq_len, rollout_length)
    if rollout_length % length:
        raise UnirlError(f"a recurrent model learns on sequences of model.max_seq_len = {module.max_seq_len} steps, "
                         f"which must divide the rollout length ({rollout_length} steps per env: train_batch_size "
                         "over the number of envs); change one of them.")
    return length


def replay_outputs(policy, batch: sb.SampleBatch):
    """Each env's steps replayed from its stored state with the learner's weights: (dist_inputs [T * N, k] and
    values [T * N] time-major, the value after the batch [N], the values of truncated episodes' final
    observations [K], the state at each step [T, N, state], resets [T, N])."""
    module = policy.module
    obs, state = batch[sb.OBS], np.asarray(batch[sb.STATE_IN], np.float32).copy()
    T, N = batch.num_steps, batch.num_envs
    dones = batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS]
    states = np.empty((T, N) + state.shape[1:], np.float32)
    inputs, values, after = [], [], np.empty((T, N) + state.shape[1:], np.float32)
    for t in range(T):
        states[t] = state
        out = step_outputs(policy, obs[t], state)
        inputs.append(out["dist_inputs"])
        values.append(out["values"])
        after[t] = out["state"]
        state = np.where(dones[t][:, None], np.float32(0.0), out["state"]).astype(np.float32)
    extra_obs = np.concatenate([batch[sb.BOOTSTRAP_OBS], batch[sb.TRUNC_OBS]], axis=0).astype(np.float32)
    index = batch[sb.TRUNC_INDEX]
    extra_state = np.concatenate([state, after.reshape((T * N,) + state.shape[1:])[index]], axis=0)
    extra = step_outputs(policy, extra_obs, extra_state)["values"]
    resets = np.zeros((T, N), np.float32)
    resets[1:] = dones[:-1]
    return (np.concatenate(inputs), np.concatenate(values), extra[:N], extra[N:], states, resets)


def to_sequences(rows: dict[str, np.ndarray], states: np.ndarray, resets: np.ndarray, length: int) -> dict:
    """Time-major rows [T * N, ...] as sequences of `length` steps of one env, in (env, time) order: every column's
    rows reordered (sequence s's step l at row s * length + l), plus STATE_IN [S, state] (each sequence's state at
    its first step) and RESETS (1.0 where an episode starts inside a sequence)."""
    T, N = resets.shape
    order = (np.arange(T).reshape(T // length, length)[None, :, :] * N
             + np.arange(N)[:, None, None]).reshape(-1)  # (env, chunk, step) -> flat t * N + n
    out = {k: v[order] for k, v in rows.items()}
    out[sb.STATE_IN] = np.ascontiguousarray(states[::length].transpose(1, 0, 2).reshape((-1,) + states.shape[2:]))
    first = np.zeros((T, N), bool)
    first[::length] = True
    out[sb.RESETS] = np.where(first, np.float32(0.0), resets).reshape(-1)[order].astype(np.float32)
    return out
