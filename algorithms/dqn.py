"""DQN (Mnih et al. 2015) with double Q-learning (van Hasselt et al. 2016), an optional dueling head
(Wang et al. 2016, model option `dueling`), n-step returns, the Huber loss, a target network and
uniform or prioritized replay (Schaul et al. 2016), on the "sync replay" execution pattern.

Exploration is epsilon-greedy on a linear schedule; the explore decision and the random action
come from each env's own noise stream (EpsilonGreedy), so every backend acts the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.config import AlgorithmConfig, ReplayConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.optim import linear_schedule
from unirl.replay import WEIGHTS  # noqa: F401 (importance weights, ones for uniform replay; re-exported)

# Replay row columns (flat rows, one per env step, in (t, global env) order).
NEXT_OBS = "next_obs"  # observation n steps later (or where the episode ended)
DISCOUNTS = "discounts"  # gamma ** k, k the steps the n-step return covers
REPLAY_COLUMNS = (sb.OBS, sb.ACTIONS, sb.REWARDS, NEXT_OBS, sb.TERMINATEDS, DISCOUNTS)


@dataclass
class QLearningConfig(AlgorithmConfig):
    """Options of Q-learning's math, whatever the execution (DQN, Async DQN): the network, the n-step double-Q
    Huber loss, the target network and epsilon-greedy exploration."""

    #: Adam learning rate.
    lr: float = 1e-3
    #: Discount factor.
    gamma: float = 0.99
    #: Clip the gradient to this global norm (0 disables).
    grad_clip: float = 10.0
    #: The Q-network (unirl.models.ModelConfig): hidden_sizes, activation, dueling.
    model: dict = field(default_factory=lambda: {"hidden_sizes": [128, 128], "activation": "relu"})
    #: Steps of the n-step return (1: one-step Q-learning); cut short at episode ends and fragment ends.
    n_step: int = 3
    #: Double Q-learning: the online network picks the next action, the target network values it.
    double_q: bool = True
    #: Transition point of the Huber loss (quadratic below, linear above).
    huber_delta: float = 1.0
    #: Epsilon at the start of training.
    exploration_initial_eps: float = 1.0
    #: Epsilon reached after exploration_timesteps and kept.
    exploration_final_eps: float = 0.02
    #: Env steps over which epsilon decays linearly.
    exploration_timesteps: int = 10_000

    def validate(self) -> None:
        super().validate()
        if self.n_step < 1:
            raise UnirlError(f"config key `n_step` must be at least 1, got {self.n_step}.")
        if self.exploration_timesteps < 0:
            raise UnirlError("config key `exploration_timesteps` must not be negative.")
        for key in ("exploration_initial_eps", "exploration_final_eps"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UnirlError(f"config key `{key}` must lie in [0, 1], got {getattr(self, key)}.")
        if self.huber_delta <= 0:
            raise UnirlError(f"config key `huber_delta` must be positive, got {self.huber_delta}.")


@dataclass
class DQNConfig(QLearningConfig, ReplayConfig):
    """DQN's options (plus those of every algorithm). `train_batch_size` is the env steps sampled per iteration."""

    # Generic defaults (on CartPole-v1 they solve some seeds within 50k env steps, not all: docs/qlearning.md);
    # the config for CartPole (every framework, seeds 0-2, tests/test_dqn.py) is benchmarks/configs/dqn_cartpole.json.
    #: Envs stepped together in each worker.
    num_envs_per_worker: int = 4
    #: Env steps sampled per iteration, over all envs.
    train_batch_size: int = 32
    #: Copy the online network into the target network every this many env steps.
    target_network_update_freq: int = 500

    def validate(self) -> None:
        super().validate()
        if self.target_network_update_freq < 1:
            raise UnirlError(f"config key `target_network_update_freq` must be at least 1, "
                             f"got {self.target_network_update_freq}.")


def next_observations(batch: sb.SampleBatch) -> np.ndarray:
    """[T, N, *obs]: the observation after each step: the final one where an episode ended (truncated, or
    terminated where the batch keeps terminal observations: column TERM_OBS; Q-targets never bootstrap from
    it, a dynamics model learns to predict it), else the next step's."""
    obs = batch[sb.OBS]
    T, N = batch.num_steps, batch.num_envs
    nxt = np.empty_like(obs)
    nxt[:-1] = obs[1:]
    nxt[-1] = batch[sb.BOOTSTRAP_OBS]
    term = batch[sb.TERMINATEDS]
    nxt[term] = obs[term]
    for index, final in ((sb.TRUNC_INDEX, sb.TRUNC_OBS), (sb.TERM_INDEX, sb.TERM_OBS)):
        if index in batch:
            t, n = np.divmod(batch[index], N)
            nxt[t, n] = batch[final]
    return nxt


def n_step_rows(batch: sb.SampleBatch, gamma: float, n_step: int) -> dict[str, np.ndarray]:
    """Replay rows [T * N] in (t, env) order: R = sum_j gamma^j r_{t+j} over k <= n_step steps,
    stopping at an episode's end or the fragment's end, with the observation k steps later, whether
    the episode terminated there, and gamma^k (float64 sums, stored as float32)."""
    T, N = batch.num_steps, batch.num_envs
    rewards = batch[sb.REWARDS].astype(np.float64)
    term = batch[sb.TERMINATEDS]
    done = term | batch[sb.TRUNCATEDS]
    nxt = next_observations(batch)
    t0 = np.broadcast_to(np.arange(T)[:, None], (T, N))
    env = np.broadcast_to(np.arange(N)[None, :], (T, N))
    ret = np.zeros((T, N), np.float64)
    disc = np.ones((T, N), np.float64)
    end = t0.copy()
    alive = np.ones((T, N), bool)
    for j in range(n_step):
        tj = t0 + j
        valid = alive & (tj < T)
        tc = np.minimum(tj, T - 1)
        ret = np.where(valid, ret + disc * rewards[tc, env], ret)
        disc = np.where(valid, disc * gamma, disc)
        end = np.where(valid, tc, end)
        alive = valid & ~done[tc, env]
    flat = (T * N,)
    return {
        sb.OBS: batch[sb.OBS].reshape(flat + batch[sb.OBS].shape[2:]),
        sb.ACTIONS: batch[sb.ACTIONS].reshape(flat + batch[sb.ACTIONS].shape[2:]),
        sb.REWARDS: ret.astype(np.float32).reshape(flat),
        NEXT_OBS: nxt[end, env].reshape(flat + nxt.shape[2:]),
        sb.TERMINATEDS: term[end, env].astype(np.float32).reshape(flat),
        DISCOUNTS: disc.astype(np.float32).reshape(flat),
    }


def huber(ops, x, delta):
    """0.5 x^2 where |x| <= delta, delta (|x| - delta / 2) beyond."""
    a = ops.abs(x)
    return ops.where(a <= delta, 0.5 * ops.square(x), delta * (a - 0.5 * delta))


def q_targets(ops, module, params, target_params, batch, double_q: bool):
    """(Q(s, a) online, r + gamma^k (1 - terminated) Q_target(s', a*) with a stop-gradient)."""
    obs, next_obs = batch[sb.OBS], batch[NEXT_OBS]
    if double_q:
        # One pass over [obs; next_obs]. (A separate pass over next_obs on gradient-stopped weights would spare
        # the backward B zero rows, but under JAX its bits then differed between a driver with process workers
        # and one without: conformance level 3 failed for jax/multiprocessing.)
        b = obs.shape[0]
        q_both = module.forward_train(ops, params, ops.concat([obs, next_obs], axis=0))["q"]
        q, q_next_online = q_both[:b], q_both[b:]
    else:
        q = module.forward_train(ops, params, obs)["q"]
    q_next_target = module.forward_train(ops, target_params, next_obs)["q"]
    chooser = q_next_online if double_q else q_next_target
    best = ops.argmax(ops.stop_gradient(chooser), axis=-1)
    q_next = ops.take_along_last(q_next_target, best)
    target = batch[sb.REWARDS] + batch[DISCOUNTS] * (1.0 - batch[sb.TERMINATEDS]) * q_next
    return ops.take_along_last(q, batch[sb.ACTIONS]), ops.stop_gradient(target)


def dqn_loss(ops, module, params, batch, hp, target_params):
    """Importance-weighted Huber loss of the (double) Q-learning TD error, written once on the neutral ops.

    Stats include `td_error` per row (for replay priorities).
    """
    q_sel, target = q_targets(ops, module, params, target_params, batch, "double_q" in hp)
    td = q_sel - target
    loss = ops.mean(batch[WEIGHTS] * huber(ops, td, hp["huber_delta"]))
    stats = {"mean_q": ops.mean(ops.stop_gradient(q_sel)), "mean_td_error": ops.mean(ops.abs(ops.stop_gradient(td))),
             "td_error": ops.stop_gradient(td)}
    return loss, stats


class DQN(Algorithm):
    name = "DQN"
    config_class = DQNConfig
    module_kind = "q"
    loss = staticmethod(dqn_loss)
    param_sets = ("params", "target_params")
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "train_batch_size": 48, "learning_starts": 0,
                    "replay_batch_size": 32, "training_intensity": 0.25, "target_network_update_freq": 96,
                    "model": {"hidden_sizes": [32, 32], "activation": "relu"}},
        curve_config={"env": "CartPole-v1", "total_envs": 4, "train_batch_size": 32},
        learning={"config": {"env": "CartPole-v1"}, "score": 475.0, "budget": 50_000, "eval_episodes": 20},
        variants={
            # multi-agent: a turn-based game with action masks, one policy per seat (unirl.multi_agent)
            "tictactoe": ConformanceSpec(
                run_config={"env": "classic/tictactoe-v3", "total_envs": 12, "train_batch_size": 48,
                            "learning_starts": 24, "replay_batch_size": 16, "target_network_update_freq": 48,
                            "model": {"hidden_sizes": [32, 32], "activation": "relu"},
                            "multi_agent": {"policies": {"player_1": {}, "player_2": {}}}},
                quick_iterations=3),
        },
    )

    execution = loops.SyncReplay()

    def setup(self) -> None:
        self.last_target_update = 0
        self.target_updates = 0
        super().setup()

    def postprocess(self, batch: sb.SampleBatch) -> dict[str, np.ndarray]:
        return n_step_rows(batch, self.config.gamma, self.config.n_step)

    def epsilon(self) -> float:
        c = self.config
        return linear_schedule(self.timesteps_total, c.exploration_initial_eps, c.exploration_final_eps,
                               c.exploration_timesteps)

    def exploration(self, worker_id: int | None = None) -> dict:
        return {"epsilon": self.epsilon()}

    def beta(self) -> float:
        return self.execution.beta()

    def hyperparameters(self) -> dict[str, float]:
        hp = {"lr": self.current_lr(), "huber_delta": self.config.huber_delta}
        if self.config.double_q:
            hp["double_q"] = 1.0
        return hp

    def after_samples(self) -> None:
        """The target network: a copy of the online one every target_network_update_freq env steps."""
        if self.timesteps_total - self.last_target_update >= self.config.target_network_update_freq:
            self.policy.copy_params("params", "target_params")
            self.last_target_update = self.timesteps_total
            self.target_updates += 1

    def training_step(self) -> dict:
        return dict(super().training_step(), target_updates=self.target_updates)

    def get_state(self):
        arrays, state = super().get_state()
        state.update(last_target_update=self.last_target_update, target_updates=self.target_updates)
        return arrays, state

    def set_state(self, arrays, state) -> None:
        super().set_state(arrays, state)
        self.last_target_update = int(state.get("last_target_update", 0))
        self.target_updates = int(state.get("target_updates", 0))
