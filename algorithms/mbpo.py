"""MBPO (Janner et al. 2019, "When to Trust Your Model: Model-Based Policy Optimization"): SAC trained on short
rollouts of a learned model, branched from real states.

- The real data: SAC's workers and replay (the "sync replay" pattern), each transition also kept as (s, a, s' - s)
  with the ensemble's bootstrap counts (unirl.dynamics; zero on steps that terminated an episode, whose next
  observation the env hides).
- Every `model_train_freq` env steps (a "model phase", on the driver): the ensemble takes its owed gradient steps
  (`model_training_intensity` per env step) on real minibatches; then `rollout_batch_size` real states start
  rollouts of `model_rollout_length` steps (a schedule over env steps if `model_rollout_schedule`), actions from the
  current SAC policy, next states from the ensemble (row r on member r mod E), rewards and ends from the env's
  reward and termination functions (unirl.rewards); the imagined transitions fill the model buffer, which keeps
  the last `model_retain_phases` phases.
- SAC's gradient steps (`training_intensity` per env step, many: the model data is cheap) each take a fraction
  `real_ratio` of the minibatch from the real buffer and the rest from the model buffer.

Every draw comes from a stream keyed by the run seed and a global index (the model's minibatches and rollouts
by the phase), so every backend and worker count gives the same bits; the model, its buffer and counters are in
the checkpoint.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl import seeding
from unirl.algorithms.dqn import DISCOUNTS, NEXT_OBS
from unirl.algorithms.sac import SAC, SACConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.dynamics import BOOTSTRAP, DELTA, EnsembleDynamics, bootstrap_weights, gaussian_nll, \
    refit_normalization, sample_next
from unirl.errors import UnirlError
from unirl.models import ModelConfig
from unirl.optim import default_optimizer, piecewise_linear
from unirl.policy import PolicySpec
from unirl.replay import WEIGHTS, ReplayBuffer, prefixed, unprefixed
from unirl.rewards import reward_functions

#: The columns SAC's learner reads, real or imagined.
SAC_COLUMNS = (sb.OBS, sb.ACTIONS, sb.REWARDS, NEXT_OBS, sb.TERMINATEDS, DISCOUNTS)


@dataclass
class MBPOConfig(SACConfig):
    """MBPO's options: SAC's, and the model's (the paper's, scaled to a CPU: 5 members of 4 x 200 units there,
    7 of 4 x 200 in the paper; 400 rollouts per phase here, 100,000 there)."""

    #: Env steps of uniform random actions before the first gradient step (and the first model phase).
    learning_starts: int = 1000
    #: SAC's gradient steps per env step (the paper: 20).
    training_intensity: float = 10.0
    #: Each ensemble member's network (unirl.models.ModelConfig keys: hidden_sizes, activation).
    dynamics_model: dict = field(default_factory=lambda: {"hidden_sizes": [200, 200, 200, 200],
                                                          "activation": "swish"})
    #: Members of the ensemble.
    ensemble_size: int = 5
    #: Adam learning rate of the model.
    model_lr: float = 1e-3
    #: Rows in each of the model's minibatches.
    model_batch_size: int = 256
    #: The model's gradient steps per env step.
    model_training_intensity: float = 1.0
    #: Pull of the log-variance bounds towards each other (unirl.dynamics).
    logvar_bound_coef: float = 0.01
    #: Env steps between model phases (fit, then rollouts).
    model_train_freq: int = 250
    #: Rollouts started per phase (a multiple of ensemble_size).
    rollout_batch_size: int = 400
    #: Steps of each model rollout.
    model_rollout_length: int = 1
    #: Or a schedule of the rollout length over env steps, [[env_steps, length], ...] (linear in between).
    model_rollout_schedule: typing.Optional[list] = None
    #: Phases of imagined data the model buffer keeps.
    model_retain_phases: int = 20
    #: Fraction of each SAC minibatch taken from real transitions (the rest from the model's).
    real_ratio: float = 0.05
    #: The reward function of imagined steps, "module:function" (default: the env's own, unirl.rewards).
    reward_fn: str = ""
    #: The termination function of imagined steps, "module:function" (default: the env's own, if any; none:
    #: imagined rollouts never end early).
    termination_fn: str = ""
    #: Learn the reward with the dynamics (a reward head) instead of computing it: true, false, or null (learn it
    #: when there is no reward function for the env).
    learn_reward: typing.Optional[bool] = None

    def validate(self) -> None:
        super().validate()
        if self.n_step != 1:
            raise UnirlError("MBPO learns one-step dynamics: config key `n_step` must be 1.")
        if self.prioritized_replay:
            raise UnirlError("MBPO mixes real and imagined minibatches uniformly: config key `prioritized_replay` "
                             "must be false.")
        if self.rollout_batch_size < 1 or self.rollout_batch_size % self.ensemble_size:
            raise UnirlError(f"config key `rollout_batch_size` ({self.rollout_batch_size}) must be a positive "
                             f"multiple of `ensemble_size` ({self.ensemble_size}): rollout r follows member r mod "
                             f"{self.ensemble_size}.")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise UnirlError(f"config key `real_ratio` must lie in [0, 1], got {self.real_ratio}.")
        if self.model_train_freq < 1 or self.model_retain_phases < 1 or self.model_rollout_length < 1:
            raise UnirlError("config keys `model_train_freq`, `model_retain_phases` and `model_rollout_length` "
                             "must be at least 1.")


#: A small Pendulum run for the conformance suite's levels 1-4 (model phases every 24 env steps).
PENDULUM_RUN = {"env": "Pendulum-v1", "total_envs": 12, "train_batch_size": 24, "learning_starts": 24,
                "replay_batch_size": 32, "training_intensity": 0.5, "model_train_freq": 24,
                "rollout_batch_size": 20, "model_rollout_length": 2, "ensemble_size": 2, "model_batch_size": 32,
                "model": {"hidden_sizes": [32, 32], "activation": "relu"},
                "dynamics_model": {"hidden_sizes": [16, 16], "activation": "swish"}}


class MBPO(SAC):
    name = "MBPO"
    config_class = MBPOConfig
    conformance = ConformanceSpec(
        run_config=PENDULUM_RUN,
        curve_config=dict(PENDULUM_RUN, env_config={"max_episode_steps": 50}, total_envs=4, train_batch_size=48,
                          learning_starts=48, model_train_freq=48),
        learning={"config": {"env": "Pendulum-v1"}, "score": -200.0, "budget": 5_000, "eval_episodes": 10,
                  "eval_every": 1000},
    )

    def setup(self) -> None:
        c = self.config
        if self.policy.module.discrete:
            raise UnirlError(f"MBPO learns dynamics over continuous actions; env `{c.env}` has discrete ones (use "
                             "SAC, or DQN).")
        self.reward_fn, self.termination_fn = reward_functions(c.env, c.reward_fn, c.termination_fn, c.learn_reward)
        dynamics = ModelConfig(**c.dynamics_model)
        dynamics.validate()
        obs_dim = int(np.prod(self.policy.module.obs_shape))
        act_dim = int(np.prod(self.policy.dist.action_shape))
        module = EnsembleDynamics(obs_dim, act_dim, self.policy.dist, dynamics, c.ensemble_size,
                                  reward_head=self.reward_fn is None)
        #: The dynamics ensemble: trained and rolled out on the driver.
        self.model = PolicySpec(c.framework, module, c.seed, c.deterministic, c.num_threads).build(
            loss=gaussian_nll, optimizer=default_optimizer(0.0))
        self.model_buffer = ReplayBuffer(c.rollout_batch_size * self.max_rollout_length() * c.model_retain_phases)
        self.model_phase = -1
        self.model_grad_steps = 0
        self.model_stats: dict = {}
        super().setup()

    def max_rollout_length(self) -> int:
        c = self.config
        return max([c.model_rollout_length] + [int(v) for _, v in c.model_rollout_schedule or []])

    def current_rollout_length(self) -> int:
        c = self.config
        length = piecewise_linear(c.model_rollout_schedule, self.timesteps_total, c.model_rollout_length)
        return max(1, int(length))

    def postprocess(self, batch: sb.SampleBatch) -> dict[str, np.ndarray]:
        """SAC's rows, and for the model the change s' - s with bootstrap counts (every step of a batch with terminal
        observations, TERM_OBS; otherwise none on terminated steps, whose next observation is unknown)."""
        rows = super().postprocess(batch)
        rows[DELTA] = (rows[NEXT_OBS] - rows[sb.OBS]).astype(np.float32)
        counts = bootstrap_weights(self.config.seed, self.timesteps_total, len(rows[sb.OBS]), self.config.ensemble_size)
        unknown = rows[sb.TERMINATEDS][:, None] > 0 if sb.TERM_INDEX not in batch else np.zeros((1, 1), bool)
        rows[BOOTSTRAP] = np.where(unknown, 0.0, counts).astype(np.float32)
        return rows

    # -- the model phase ----------------------------------------------------------------------------------
    def fit_model(self) -> dict:
        """The normalisation refit to the real data, then the model's owed gradient steps on real minibatches."""
        c = self.config
        refit_normalization(self.model, self.buffer.take(np.arange(len(self.buffer))))
        owed = int(c.model_training_intensity * self.timesteps_total) - self.model_grad_steps
        rng = seeding.generator(c.seed, seeding.MODEL_ROLLOUT, self.model_phase, 0)
        hp = self.model.hp_tensors({"lr": c.model_lr, "logvar_bound_coef": c.logvar_bound_coef})
        stats = None
        for _ in range(max(owed, 0)):
            rows, _, _ = self.buffer.sample(c.model_batch_size, rng)
            stats = self.model.learn_on_batch({k: rows[k] for k in (sb.OBS, sb.ACTIONS, DELTA, BOOTSTRAP, sb.REWARDS)},
                                              hp)
        self.model.finish_learning()
        self.model_grad_steps += max(owed, 0)
        return {} if stats is None else self.model.stats_numpy({k: v for k, v in stats.items()
                                                                if k in ("model_nll", "model_mse")})

    def imagine(self) -> int:
        """Rollouts of the current policy through the model from real states into the model buffer; returns the
        number of imagined transitions."""
        c = self.config
        rng = seeding.generator(c.seed, seeding.MODEL_ROLLOUT, self.model_phase, 1)
        obs = self.buffer.sample(c.rollout_batch_size, rng)[0][sb.OBS]
        alive = np.ones(len(obs), bool)
        dist, added = self.policy.dist, 0
        for _ in range(self.current_rollout_length()):
            actions = self.policy.compute_actions(obs, rng.random((len(obs), dist.noise_per_step)))
            nxt, rewards = sample_next(self.model, obs, actions, rng)
            if self.reward_fn is not None:
                rewards = self.reward_fn(obs, dist.env_actions(actions), nxt)
            term = (np.zeros(len(obs), bool) if self.termination_fn is None
                    else np.asarray(self.termination_fn(nxt), bool))
            rows = {sb.OBS: obs, sb.ACTIONS: actions, sb.REWARDS: np.asarray(rewards, np.float32), NEXT_OBS: nxt,
                    sb.TERMINATEDS: term.astype(np.float32),
                    DISCOUNTS: np.full(len(obs), c.gamma, np.float32)}
            self.model_buffer.add({k: v[alive] for k, v in rows.items()})
            added += int(alive.sum())
            alive &= ~term
            obs = nxt
        return added

    def model_phase_due(self) -> bool:
        return self.timesteps_total // self.config.model_train_freq > self.model_phase

    def learn_minibatches(self, minibatches: list, hp: dict, step: int):
        """A model phase when one is due; then SAC's steps on minibatches of real rows (the first real_ratio of
        each replayed one) and imagined rows (the rest, drawn from the model buffer)."""
        if self.model_phase_due():
            self.model_phase = self.timesteps_total // self.config.model_train_freq
            self.model_stats = self.fit_model()
            self.model_stats["imagined"] = self.imagine()
        B = self.config.replay_batch_size
        n_real = int(round(self.config.real_ratio * B))
        mixed = []
        for rows in minibatches:
            imagined = self.model_buffer.sample(B - n_real, self.learner_rng)[0] if n_real < B else None
            batch = {k: rows[k][:n_real] if imagined is None else np.concatenate([rows[k][:n_real], imagined[k]])
                     for k in SAC_COLUMNS}
            batch[WEIGHTS] = np.ones(B, np.float32)
            mixed.append(batch)
        return super().learn_minibatches(mixed, hp, step)

    def extra_metrics(self) -> dict:
        out = {f"model/{k}": v for k, v in self.model_stats.items()}
        out["model/buffer_size"] = len(self.model_buffer)
        out["model/rollout_length"] = self.current_rollout_length()
        return out

    # -- weights and state ----------------------------------------------------------------------------------
    def flat_weights(self) -> np.ndarray:
        """The policy's weights, then the model's: the digest covers both."""
        return np.concatenate([self.policy.get_flat_weights(), self.model.get_flat_weights()])

    def get_state(self) -> tuple[dict, dict]:
        arrays, state = super().get_state()
        arrays.update(prefixed(self.model.get_state(), "dynamics"))
        buf_arrays, buf_meta = self.model_buffer.get_state()
        arrays.update(prefixed(buf_arrays, "model_replay"))
        state.update({"model_replay": buf_meta, "model_phase": self.model_phase,
                      "model_grad_steps": self.model_grad_steps})
        return arrays, state

    def set_state(self, arrays: dict, state: dict) -> None:
        super().set_state({k: v for k, v in arrays.items() if not k.startswith(("dynamics/", "model_replay/"))},
                          state)
        self.model.set_state(unprefixed(arrays, "dynamics"))
        if "model_replay" in state:
            self.model_buffer.set_state(unprefixed(arrays, "model_replay"), state["model_replay"])
        self.model_phase = int(state.get("model_phase", -1))
        self.model_grad_steps = int(state.get("model_grad_steps", 0))
