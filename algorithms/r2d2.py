"""R2D2 (Kapturowski et al. 2019): Ape-X with a recurrent Q-network learning on stored sequences.

The actors are Ape-X's (per-env epsilons by global env index, the async replay pattern); the module is
unirl.models.RecurrentQ (a Q head on an LSTM or GRU after the torso, `model.lstm_cell_size`), which acts from
each env's state kept by its worker. A replay row is one sequence of `model.max_seq_len` steps of one env, with
the recurrent state the actor had at its first step (stored-state replay); an env's sequences start every
`sequence_stride` steps of the actor's batch (by default half a sequence: adjacent sequences overlap by half, as
the paper's 40 of 80; sequences do not straddle two batches). An episode that starts inside a sequence zeroes
the state there (column RESETS, as every recurrent learner in unirl does).

The first `burn_in` steps of a sequence only refresh the stored state: they run without gradient (stop_gradient
on the state after them) and carry no target (their rows keep observations and resets only). On the remaining
steps the loss is the importance-weighted Huber loss of n-step double Q-learning with the value rescaling
h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x: target h(R + gamma^k h^-1(Q_target(s_{t+k}, argmax_a Q(s_{t+k}, a)))),
bootstrapping from inside the sequence (k <= n_step, cut at the sequence's end and at a truncated episode's last
step; no bootstrap after a terminal step; a step with no step after it to bootstrap from is masked). A sequence's
priority is eta max_t |TD_t| + (1 - eta) mean_t |TD_t| over its trained steps; actors compute the initial ones
with their own network (standing in for the target network too), the learner sends the new ones to the shards.

Replayable like Ape-X: a free-running run's `arrival_schedule` replays it bit for bit on any backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithms.apex import ApeX, ApeXConfig, actor_epsilons
from unirl.algorithms.dqn import DISCOUNTS, huber
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.ops import numpy_ops
from unirl.recurrent import STATES, to_sequences
from unirl.replay import WEIGHTS

# Replay row columns besides OBS, ACTIONS, REWARDS (the n-step return), DISCOUNTS, STATE_IN and RESETS: each row
# is one sequence, its step columns [L - burn_in, ...] (the trained steps), the burn-in's [burn_in, ...].
BOOTSTRAP_STEPS = "bootstrap_steps"  # int64: the trained step whose Q the target bootstraps from
MASK = "mask"  # 1.0 where a step has a target (it is trained and counts in the priority)
BURN_IN_OBS = "burn_in_obs"
BURN_IN_RESETS = "burn_in_resets"
#: The learner stat that carries each sequence's new priority back to its shard.
PRIORITY = "priority"


@dataclass
class R2D2Config(ApeXConfig):
    """R2D2's options (plus Ape-X's, DQN's and the async replay pattern's). A replay row is a sequence: replay_batch_size
    and replay_buffer_capacity count sequences; the model must be recurrent (`model.lstm_cell_size`)."""

    #: The recurrent Q-network (unirl.models.ModelConfig): the torso's hidden_sizes, the cell (lstm_cell_size, cell_type)
    #: and max_seq_len, the steps of one replayed sequence (burn-in included).
    model: dict = field(default_factory=lambda: {"hidden_sizes": [64], "activation": "relu", "lstm_cell_size": 64,
                                                 "max_seq_len": 24})
    #: Envs stepped together in each actor.
    num_envs_per_worker: int = 4
    #: Env steps per iteration over all envs (each actor batch: this over the total envs steps per env, a multiple of
    #: model.max_seq_len).
    train_batch_size: int = 384
    #: Sequences each shard holds.
    replay_buffer_capacity: int = 5_000
    #: Sequences in each replayed minibatch (one gradient step).
    replay_batch_size: int = 32
    #: Env steps sampled before the first gradient step.
    learning_starts: int = 2_000
    #: Gradient steps per sampled env step (each step replays replay_batch_size sequences).
    training_intensity: float = 0.04
    #: Adam learning rate.
    lr: float = 1e-3
    #: Steps of the n-step return, cut short at episode ends and at the sequence's end.
    n_step: int = 3
    #: Copy the online network into the target network every this many env steps.
    target_network_update_freq: int = 2_500
    #: Env steps over which beta reaches 1.
    prioritized_replay_beta_annealing_timesteps: int = 200_000
    #: Leading steps of each sequence that only refresh its stored state (no gradient, no target).
    burn_in: int = 8
    #: Steps between the starts of an env's consecutive sequences in an actor batch (0: max_seq_len // 2, adjacent
    #: sequences overlapping by half; max_seq_len: back to back).
    sequence_stride: int = 0
    #: eps of the value rescaling h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x around the targets.
    value_rescaling_eps: float = 1e-3
    #: A sequence's priority: eta * max |TD| + (1 - eta) * mean |TD| over its trained steps.
    priority_eta: float = 0.9

    def sequence_length(self) -> int:
        return int(self.model.get("max_seq_len", 32))

    def stride(self) -> int:
        return self.sequence_stride or max(1, self.sequence_length() // 2)

    def validate(self) -> None:
        super().validate()
        if not self.model.get("lstm_cell_size"):
            raise UnirlError("R2D2 learns with a recurrent Q-network: set model.lstm_cell_size (e.g. "
                             "`\"model\": {\"lstm_cell_size\": 64, \"max_seq_len\": 24}`).")
        length, stride = self.sequence_length(), self.stride()
        if not 0 <= self.burn_in < length:
            raise UnirlError(f"config key `burn_in` must lie in [0, model.max_seq_len) = [0, {length}), got {self.burn_in}: "
                             "a sequence needs steps after its burn-in to learn on.")
        if self.burn_in + 1 >= length:
            raise UnirlError(f"R2D2 sequences of model.max_seq_len = {length} steps with a burn-in of {self.burn_in} "
                             "leave no step with a target after it; lengthen the sequences or shorten the burn-in.")
        if not 1 <= stride <= length or length % stride:
            raise UnirlError(f"config key `sequence_stride` must divide model.max_seq_len = {length}, got {stride}.")
        T = self.rollout_length
        if T < length or T % length:
            raise UnirlError(f"each actor batch holds {T} steps per env (train_batch_size / number of envs), which must be "
                             f"a multiple of model.max_seq_len = {length}; change train_batch_size or max_seq_len.")
        if not 0.0 <= self.priority_eta <= 1.0:
            raise UnirlError(f"config key `priority_eta` must lie in [0, 1], got {self.priority_eta}.")
        if self.value_rescaling_eps <= 0:
            raise UnirlError(f"config key `value_rescaling_eps` must be positive, got {self.value_rescaling_eps}.")


# -- the math, written once on the neutral ops (NumPy's on the actors) -------------------------------
def value_rescale(ops, x, eps: float):
    """h(x) = sign(x) (sqrt(|x| + 1) - 1) + eps x (Pohlen et al. 2018), as sign(x) |x| / (sqrt(|x| + 1) + 1) + eps x:
    the same number without subtracting nearly equal ones (float32 would keep few digits of a small |x|)."""
    a = ops.abs(x)
    y = a / (ops.sqrt(a + 1.0) + 1.0)
    return ops.where(x < 0.0, -y, y) + eps * x


def value_rescale_inverse(ops, x, eps: float):
    """h^-1(x) = sign(x) (((sqrt(1 + 4 eps (|x| + 1 + eps)) - 1) / (2 eps))^2 - 1), computed without cancellation:
    with a = |x| + 1 + eps and s = sqrt(1 + 4 eps a), s - 1 = 4 eps a / (s + 1), so the bracket is 1 + u with
    u = (2 (|x| + eps) - (s - 1)) / (s + 1), and the result u (2 + u). The formula as written divides a difference
    of nearly equal float32 numbers by 2 eps = 0.002, which multiplies their rounding error by 500 (the frameworks'
    sqrt then disagree in the 5th digit)."""
    a = ops.abs(x) + 1.0 + eps
    s = ops.sqrt(1.0 + 4.0 * eps * a)
    u = (2.0 * (ops.abs(x) + eps) - 4.0 * eps * a / (s + 1.0)) / (s + 1.0)
    y = u * (2.0 + u)
    return ops.where(x < 0.0, -y, y)


def _shape(x) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def sequence_q(ops, module, params, batch):
    """Q-values [S, L - burn_in, n] of the trained steps of each sequence, the cell run from its stored state through
    the burn-in without gradient."""
    obs, state = batch[sb.OBS], batch[sb.STATE_IN]
    s, steps = _shape(obs)[:2]
    if BURN_IN_OBS in batch:
        burn = batch[BURN_IN_OBS]
        b = _shape(burn)[1]
        _, state = module.cell_sequences(ops, params, ops.reshape(burn, (s * b,) + _shape(burn)[2:]), state,
                                         ops.reshape(batch[BURN_IN_RESETS], (s * b,)))
        state = ops.stop_gradient(state)
    q = module.forward_sequences(ops, params, ops.reshape(obs, (s * steps,) + _shape(obs)[2:]), state,
                                 ops.reshape(batch[sb.RESETS], (s * steps,)))["q"]
    return ops.reshape(q, (s, steps, -1))


def td_errors(ops, q, q_target, batch, eps: float, double_q: bool = True):
    """Q(s_t, a_t) - h(R_t + gamma^k h^-1(Q_target(s_{t+k}, a*))) [S, T] from both networks' Q-values [S, T, n] of the
    trained steps; a* the online network's argmax (double Q) or the target network's. The target has no gradient."""
    s, steps, n = _shape(q)
    pick = ops.reshape(ops.one_hot(batch[BOOTSTRAP_STEPS], steps), (s, steps, steps, 1))

    def at_bootstrap(values):  # values at each step's bootstrap step: a one-hot sum, exact
        return ops.reshape(ops.sum(pick * ops.reshape(values, (s, 1, steps, n)), axis=2), (s * steps, n))

    q_next_target = at_bootstrap(q_target)
    chooser = at_bootstrap(q) if double_q else q_next_target
    best = ops.argmax(ops.stop_gradient(chooser), axis=-1)
    q_next = ops.reshape(ops.take_along_last(q_next_target, best), (s, steps))
    target = value_rescale(ops, batch[sb.REWARDS] + batch[DISCOUNTS] * value_rescale_inverse(ops, q_next, eps), eps)
    q_sel = ops.take_along_last(ops.reshape(q, (s * steps, n)), ops.reshape(batch[sb.ACTIONS], (s * steps,)))
    return ops.reshape(q_sel, (s, steps)) - ops.stop_gradient(target)


def sequence_priorities(ops, abs_td, mask, eta: float):
    """eta * max + (1 - eta) * mean of |TD| [S, T] over each sequence's steps with a target (mask [S, T])."""
    abs_td = abs_td * mask
    peak = ops.take_along_last(abs_td, ops.argmax(abs_td, axis=-1))
    mean = ops.sum(abs_td, axis=-1) / ops.clip(ops.sum(mask, axis=-1), 1.0, 1e9)
    return eta * peak + (1.0 - eta) * mean


def r2d2_loss(ops, module, params, batch, hp, target_params):
    """Importance-weighted Huber loss of the rescaled n-step double-Q TD errors over the trained steps of each sequence;
    stats include each sequence's new priority (PRIORITY)."""
    q = sequence_q(ops, module, params, batch)
    q_target = sequence_q(ops, module, target_params, batch)
    td = td_errors(ops, q, q_target, batch, hp["value_rescaling_eps"], "double_q" in hp)
    mask = batch[MASK]
    weights = ops.reshape(batch[WEIGHTS], (-1, 1))
    loss = ops.mean(weights * mask * huber(ops, td, hp["huber_delta"]))
    abs_td = ops.stop_gradient(ops.abs(td))
    return loss, {"mean_q": ops.mean(ops.stop_gradient(q)),
                  "mean_td_error": ops.sum(abs_td * mask) / ops.clip(ops.sum(mask), 1.0, 1e12),
                  PRIORITY: sequence_priorities(ops, abs_td, mask, hp["priority_eta"])}


# -- the actors' rows --------------------------------------------------------------------------------
def n_step_targets(rewards, terminateds, truncateds, gamma: float, n_step: int):
    """Per step of sequences [S, L]: (R = sum_j gamma^j r_{t+j} over k <= n_step steps, the bootstrap discount gamma^k
    (0 after a terminal step), the step t + k bootstrapped from, 1.0 where the step has a target). The k steps stop at
    a terminal step (included), before a truncated step (its successor is not in the sequence) and before the
    sequence's last step; a step with k = 0 and no terminal has no target (float64 sums, float32 out)."""
    S, L = rewards.shape
    t = np.broadcast_to(np.arange(L)[None, :], (S, L))
    seq = np.broadcast_to(np.arange(S)[:, None], (S, L))
    r = rewards.astype(np.float64)
    cut = truncateds & ~terminateds
    ret, disc = np.zeros((S, L)), np.ones((S, L))
    k = np.zeros((S, L), np.int64)
    alive, ended = np.ones((S, L), bool), np.zeros((S, L), bool)
    for j in range(n_step):
        tj = np.minimum(t + j, L - 1)
        term, trunc = terminateds[seq, tj], cut[seq, tj]
        take = alive & (t + j < L) & ~trunc & ((t + j + 1 < L) | term)
        ret = np.where(take, ret + disc * r[seq, tj], ret)
        disc = np.where(take, disc * gamma, disc)
        k = k + take
        ended |= take & term
        alive = take & ~term
    valid = ended | (k > 0)
    disc = np.where(ended, 0.0, disc)
    return ret.astype(np.float32), disc.astype(np.float32), np.where(ended, t, t + k), valid.astype(np.float32)


def actor_rows(batch, config) -> dict:
    """The batch's sequences (see the module docstring) as replay rows, and the actor's Q-values of their trained
    steps (column sb.BEHAVIOUR_INPUTS, taken off again by actor_priorities)."""
    T, N = batch.num_steps, batch.num_envs
    L, B = config.sequence_length(), config.burn_in
    term, trunc = batch[sb.TERMINATEDS], batch[sb.TRUNCATEDS]
    resets = np.zeros((T, N), np.float32)
    resets[1:] = term[:-1] | trunc[:-1]
    flat = {k: batch[k].reshape((T * N,) + batch[k].shape[2:])
            for k in (sb.OBS, sb.ACTIONS, sb.REWARDS, sb.TERMINATEDS, sb.TRUNCATEDS, sb.BEHAVIOUR_INPUTS)}
    seqs = to_sequences(flat, batch[STATES], resets, L, config.stride())
    cols = {k: v.reshape((-1, L) + v.shape[1:]) for k, v in seqs.items() if k != sb.STATE_IN}
    ret, disc, boot, mask = n_step_targets(cols[sb.REWARDS], cols[sb.TERMINATEDS], cols[sb.TRUNCATEDS],
                                           config.gamma, config.n_step)
    rows = {sb.OBS: cols[sb.OBS][:, B:], sb.ACTIONS: cols[sb.ACTIONS][:, B:], sb.RESETS: cols[sb.RESETS][:, B:],
            sb.REWARDS: ret[:, B:], DISCOUNTS: disc[:, B:], BOOTSTRAP_STEPS: boot[:, B:] - B, MASK: mask[:, B:],
            sb.STATE_IN: seqs[sb.STATE_IN], sb.BEHAVIOUR_INPUTS: cols[sb.BEHAVIOUR_INPUTS][:, B:]}
    if B:
        rows.update({BURN_IN_OBS: cols[sb.OBS][:, :B], BURN_IN_RESETS: cols[sb.RESETS][:, :B]})
    return {k: np.ascontiguousarray(v) for k, v in rows.items()}


def actor_priorities(policy, rows, config) -> np.ndarray:
    """Initial priorities from the Q-values the actor acted on (its network standing in for the target network)."""
    q = rows.pop(sb.BEHAVIOUR_INPUTS).astype(np.float64)
    td = td_errors(numpy_ops, q, q, rows, config.value_rescaling_eps, config.double_q)
    return sequence_priorities(numpy_ops, np.abs(td), rows[MASK], config.priority_eta) + config.prioritized_replay_eps


class R2D2(ApeX):
    name = "R2D2"
    config_class = R2D2Config
    supports_recurrent = True
    loss = staticmethod(r2d2_loss)
    conformance = ConformanceSpec(
        run_config={"env": "unirl/StatelessCartPole-v1", "total_envs": 12, "train_batch_size": 192,
                    "learning_starts": 0, "actor_batches_per_iteration": 2, "replay_batch_size": 8,
                    "training_intensity": 0.02, "target_network_update_freq": 384, "num_replay_shards": 2,
                    "weight_sync_period": 4, "burn_in": 2,
                    "model": {"hidden_sizes": [16], "activation": "relu", "lstm_cell_size": 8, "max_seq_len": 8}},
        learning={"config": {"env": "unirl/StatelessCartPole-v1"}, "score": 400.0, "budget": 500_000,
                  "eval_episodes": 20},
        # Asynchronous: levels 2 and 3 replay the free-running reference run's recorded schedule.
        reproducibility=REPLAYABLE,
    )
    execution = loops.AsyncReplay(exploration=actor_epsilons, rows=actor_rows, priorities=actor_priorities,
                                  priority_stat=PRIORITY)

    def hyperparameters(self) -> dict[str, float]:
        return dict(super().hyperparameters(), value_rescaling_eps=self.config.value_rescaling_eps,
                    priority_eta=self.config.priority_eta)
