"""Memory: a recurrent module's rollouts and learner sequences (the modules, an LSTM or GRU after the torso, are
unirl.models.RecurrentActorCritic and, for R2D2, RecurrentQ).

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


#: [T, N, *state] each env's recurrent state before each step of a batch (unirl.execution.async_replay's actors add it).
STATES = "states"
sb.register_column(STATES, "step")


def replay_steps(policy, obs: np.ndarray, state: np.ndarray, dones: np.ndarray):
    """Envs' steps replayed from their states `state` [N, state] with the policy's weights, each env's state zeroed
    after its episode ends (dones [T, N]): (the state before each step [T, N, state], each step's outputs
    [{"state", the heads' outputs}] * T, the state after the last step)."""
    state = np.asarray(state, np.float32).copy()
    T = len(obs)
    states = np.empty((T,) + state.shape, np.float32)
    outs = []
    for t in range(T):
        states[t] = state
        out = step_outputs(policy, obs[t], state)
        outs.append(out)
        state = np.where(dones[t][:, None], np.float32(0.0), out["state"]).astype(np.float32)
    return states, outs, state


def step_states(policy, batch: sb.SampleBatch) -> tuple[np.ndarray, np.ndarray]:
    """(each env's state before each step [T, N, state], the acting outputs of each step [T, N, k]) of a batch,
    replayed from its STATE_IN with the weights it was sampled with: the states and outputs the worker acted
    with (every call pads its rows to 64, so a row's bits do not depend on the call)."""
    dones = batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS]
    states, outs, _ = replay_steps(policy, batch[sb.OBS], batch[sb.STATE_IN], dones)
    key = policy.module.acting_output
    return states, np.stack([out[key] for out in outs])


def replay_outputs(policy, batch: sb.SampleBatch):
    """Each env's steps replayed from its stored state with the learner's weights: (dist_inputs [T * N, k] and
    values [T * N] time-major, the value after the batch [N], the values of truncated episodes' final
    observations [K], the state at each step [T, N, state], resets [T, N])."""
    T, N = batch.num_steps, batch.num_envs
    dones = batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS]
    states, outs, state = replay_steps(policy, batch[sb.OBS], batch[sb.STATE_IN], dones)
    inputs = [out["dist_inputs"] for out in outs]
    values = [out["values"] for out in outs]
    after = np.stack([out["state"] for out in outs]).astype(np.float32)
    extra_obs = np.concatenate([batch[sb.BOOTSTRAP_OBS], batch[sb.TRUNC_OBS]], axis=0).astype(np.float32)
    index = batch[sb.TRUNC_INDEX]
    extra_state = np.concatenate([state, after.reshape((T * N,) + state.shape[1:])[index]], axis=0)
    extra = step_outputs(policy, extra_obs, extra_state)["values"]
    resets = np.zeros((T, N), np.float32)
    resets[1:] = dones[:-1]
    return (np.concatenate(inputs), np.concatenate(values), extra[:N], extra[N:], states, resets)


def to_sequences(rows: dict[str, np.ndarray], states: np.ndarray, resets: np.ndarray, length: int,
                 stride: int | None = None) -> dict:
    """Time-major rows [T * N, ...] as sequences of `length` steps of one env, in (env, time) order: every column's
    rows reordered (sequence s's step l at row s * length + l), plus STATE_IN [S, state] (each sequence's state at
    its first step) and RESETS (1.0 where an episode starts inside a sequence). A sequence starts every `stride`
    steps (default `length`: back to back; less: adjacent sequences overlap), the last one ending at step T."""
    T, N = resets.shape
    starts = np.arange(0, T - length + 1, stride or length)
    steps = starts[:, None] + np.arange(length)[None, :]
    order = (steps[None, :, :] * N + np.arange(N)[:, None, None]).reshape(-1)  # (env, sequence, step) -> t * N + n
    out = {k: v[order] for k, v in rows.items()}
    out[sb.STATE_IN] = np.ascontiguousarray(states[starts].transpose(1, 0, 2).reshape((-1,) + states.shape[2:]))
    seq_resets = np.asarray(resets, np.float32).reshape(-1)[order].reshape(-1, length)
    seq_resets[:, 0] = 0.0  # a sequence's stored state is already the one at its first step
    out[sb.RESETS] = seq_resets.reshape(-1)
    return out
