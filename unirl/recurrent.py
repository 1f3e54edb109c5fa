"""Memory: a recurrent actor-critic (LSTM or GRU after the torso), its rollouts and its learner sequences.

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
from unirl.models import Module, torso_shapes

#: Gates per unit: LSTM input, forget, cell, output; GRU reset, update, candidate.
GATES = {"lstm": 4, "gru": 3}


class RecurrentActorCritic(Module):
    """Torso (convolutions and MLP, `torso/...`), a recurrent cell (`rnn/...`), policy and value heads on its output.

    The acting state of an env is one float32 vector: [h, c] for an LSTM (2 x lstm_cell_size), h for a GRU."""

    kind = "actor_critic"
    recurrent = True

    def __init__(self, obs_dim, dist, config):
        config.validate()
        self.cell = config.cell_type
        self.size = int(config.lstm_cell_size)
        self.max_seq_len = int(config.max_seq_len)
        shapes, self.torso_width = torso_shapes("torso", tuple(np.atleast_1d(obs_dim)), config)
        width = int(config.hidden_sizes[-1])
        g = GATES[self.cell] * self.size
        shapes.update({"rnn/wx": (width, g), "rnn/wh": (self.size, g), "rnn/b": (g,)})
        if self.cell == "gru":
            shapes["rnn/bh"] = (g,)
        shapes.update({"pi/out/w": (self.size, dist.num_outputs), "pi/out/b": (dist.num_outputs,),
                       "vf/out/w": (self.size, 1), "vf/out/b": (1,)})
        shapes.update(dist.extra_param_shapes())
        super().__init__(obs_dim, dist, config, shapes,
                         {"pi/out/w": config.pi_out_gain, "vf/out/w": 1.0, "rnn/wx": 1.0, "rnn/wh": 1.0})

    @property
    def acting_state_shape(self) -> tuple[int]:
        return (2 * self.size if self.cell == "lstm" else self.size,)

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        params = super().init_params(seed)
        params.update(self.dist.extra_param_init())
        return params

    # -- the cell ----------------------------------------------------------------------------
    def cell_step(self, ops, params, x, state):
        """(output [B, size], next state [B, state]) of one step on torso features x [B, width]."""
        n = self.size
        if self.cell == "lstm":
            h, c = ops.split(state, [n, n], axis=1)
            z = ops.matmul(x, params["rnn/wx"]) + ops.matmul(h, params["rnn/wh"]) + params["rnn/b"]
            i, f, g, o = ops.split(z, [n, n, n, n], axis=1)
            c = ops.sigmoid(f + 1.0) * c + ops.sigmoid(i) * ops.tanh(g)  # forget bias 1 (Jozefowicz et al. 2015)
            h = ops.sigmoid(o) * ops.tanh(c)
            return h, ops.concat([h, c], axis=1)
        gx = ops.matmul(x, params["rnn/wx"]) + params["rnn/b"]
        gh = ops.matmul(state, params["rnn/wh"]) + params["rnn/bh"]
        xr, xz, xn = ops.split(gx, [n, n, n], axis=1)
        hr, hz, hn = ops.split(gh, [n, n, n], axis=1)
        r = ops.sigmoid(xr + hr)
        u = ops.sigmoid(xz + hz)
        h = (1.0 - u) * ops.tanh(xn + r * hn) + u * state
        return h, h

    def heads(self, ops, params, h) -> dict:
        return {"dist_inputs": self.dist.inputs(ops, params, self.dense(ops, params, "pi/out", h)),
                "values": ops.reshape(self.dense(ops, params, "vf/out", h), (-1,))}

    def step(self, ops, params, obs, state) -> dict:
        """One step for a batch of envs: {"dist_inputs", "values", "state" (the next one)}."""
        h, state = self.cell_step(ops, params, self.tower(ops, params, "torso", obs), state)
        return dict(self.heads(ops, params, h), state=state)

    def forward_sequences(self, ops, params, obs, state_in, resets) -> dict:
        """Outputs of S sequences of L steps: obs and resets are rows in sequence order ([S * L, ...], sequence s's
        step l at row s * L + l), state_in [S, state] each sequence's state at its first step; outputs as rows
        in the same order. The torso and the heads run on all rows at once, the cell step by step."""
        s = int(state_in.shape[0])
        x = self.tower(ops, params, "torso", obs)
        steps = int(x.shape[0]) // s
        x = ops.reshape(x, (s, steps, -1))
        keep = 1.0 - ops.reshape(resets, (s, steps))
        state, outs = state_in, []
        for t in range(steps):
            state = state * keep[:, t:t + 1]
            h, state = self.cell_step(ops, params, x[:, t, :], state)
            outs.append(ops.reshape(h, (s, 1, self.size)))
        h = ops.reshape(ops.concat(outs, axis=1), (s * steps, self.size))
        return self.heads(ops, params, h)

    # -- the Module interface: one step from a zero state (an episode's first step) --------------
    def forward_train(self, ops, params, obs) -> dict:
        """Rows as an episode's first steps (zero state): what a feed-forward caller of the module sees."""
        x = self.tower(ops, params, "torso", obs)
        gates = ops.zeros_like(ops.matmul(x, params["rnn/wx"]))  # [B, gates * size]: zeros of a known row count
        d = self.acting_state_shape[0]
        state = ops.split(gates, [d, GATES[self.cell] * self.size - d], axis=1)[0]
        out, _ = self.cell_step(ops, params, x, state)
        return self.heads(ops, params, out)

    def forward_inference(self, ops, params, obs):
        return self.forward_train(ops, params, obs)["dist_inputs"]

    def value(self, ops, params, obs):
        return self.forward_train(ops, params, obs)["values"]

    def act(self, policy, obs, noise, state, **explore):
        """(actions, distribution inputs, next states) of one step of a worker's envs from their states."""
        if state is None:
            state = np.zeros((len(obs),) + self.acting_state_shape, np.float32)
        out = step_outputs(policy, obs, state)
        inputs = out["dist_inputs"]
        if noise is None:
            return policy.dist.greedy_numpy(inputs), inputs, out["state"]
        return policy.dist.sample_numpy(inputs, noise, **explore), inputs, out["state"]


def _step(ops, module, params, batch):
    return module.step(ops, params, batch["obs"], batch["state"])


def step_outputs(policy, obs: np.ndarray, state: np.ndarray) -> dict[str, np.ndarray]:
    """module.step for a batch of envs, compiled once per shape, as NumPy ({"dist_inputs", "values", "state"}). The
    rows are zero-padded to the policy's multiple (64), as every acting and learner pass is: an elementwise kernel
    then sees each row at the same place of its vector loop, whatever the number of envs, so a row's bits do
    not depend on how many envs share the call (the worker's, or all of them on the learner)."""
    from unirl.policy import _pad_rows

    multiple = policy._rows_multiple
    obs, n = _pad_rows(np.asarray(obs, np.float32), multiple)
    state, _ = _pad_rows(np.asarray(state, np.float32), multiple)
    return {k: np.array(v[:n]) for k, v in policy.call(_step, {"obs": obs, "state": state}).items()}


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
