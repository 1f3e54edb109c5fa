"""PETS (Chua et al. 2018, "Deep Reinforcement Learning in a Handful of Trials using Probabilistic Dynamics
Models") on the "sync replay" execution pattern.

The trained object is a dynamics model, not a policy: an ensemble of probabilistic networks over s' - s
(unirl.dynamics), fit by the Gaussian negative log-likelihood on replayed transitions, each member on its own
bootstrap of the data. Acting is planning (unirl.planning): in the workers, each step, the cross-entropy method
(or MPPI) over action sequences scored by trajectory sampling through the ensemble with the env's reward
function, the first action of the best plan taken (model-predictive control). The model's weights, input and
output normalisation included, reach the workers with every sampling request.

- Before `learning_starts` env steps, actions are uniform random (the first data).
- Each iteration: the workers plan and step `train_batch_size` env steps; the transitions (those that end an
  episode by termination excepted: the env hides their next state) enter the replay buffer with each member's
  Poisson(1) bootstrap counts; the normalisation is refit to the buffer; the model takes `training_intensity`
  gradient steps per new env step on replayed minibatches.

Every draw (the bootstrap counts, the minibatches, each env's planning) comes from a stream keyed by the run
seed and a global index, so every backend and worker count gives the same bits.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.algorithms.dqn import NEXT_OBS, n_step_rows
from unirl.config import ReplayConfig, check_batch_memory
from unirl.conformance_spec import ConformanceSpec
from unirl.dynamics import BOOTSTRAP, DELTA, EnsembleDynamics, bootstrap_weights, gaussian_nll, refit_normalization
from unirl.env import spaces
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.planning import PlannedActions, Planner
from unirl.policy import PolicySpec
from unirl.rewards import reward_functions


@dataclass
class PETSConfig(ReplayConfig):
    """PETS' options: the paper's planner (CEM, 5 iterations, elites 10%, alpha 0.1, 20 particles, TS-inf) and
    ensemble (5 members, log-variance bounds), with a smaller network and population than the paper's
    (3 x 200 units, 400 candidates, horizon 30) so that a step plans in milliseconds on a CPU core."""

    #: Envs stepped together in each worker.
    num_envs_per_worker: int = 1
    #: Env steps sampled per iteration, over all envs (a multiple of the number of envs).
    train_batch_size: int = 200
    #: Env steps of uniform random actions before the first plan.
    learning_starts: int = 200
    #: Adam learning rate of the model.
    lr: float = 1e-3
    #: Clip the model's gradient to this global norm (0 disables).
    grad_clip: float = 0.0
    #: Each member's network (unirl.models.ModelConfig: hidden_sizes, activation).
    model: dict = field(default_factory=lambda: {"hidden_sizes": [64, 64, 64], "activation": "swish"})
    #: Members of the ensemble.
    ensemble_size: int = 5
    replay_buffer_capacity: int = 1_000_000
    replay_batch_size: int = 64
    #: Gradient steps of the model per env step.
    training_intensity: float = 1.0
    #: Pull of the log-variance bounds towards each other (unirl.dynamics).
    logvar_bound_coef: float = 0.01
    #: "cem" (the cross-entropy method) or "mppi".
    planner: str = "cem"
    #: Planning horizon, in env steps.
    horizon: int = 15
    #: Candidate action sequences per planner iteration.
    population: int = 100
    #: CEM: the best candidates its next distribution is fit to.
    num_elites: int = 10
    #: Planner iterations per env step.
    planner_iterations: int = 5
    #: CEM: weight of the old distribution in each update.
    cem_alpha: float = 0.1
    #: Particles per candidate (a multiple of ensemble_size: particle p follows member p mod ensemble_size).
    num_particles: int = 5
    #: MPPI: temperature of the exponential weights.
    mppi_temperature: float = 1.0
    #: MPPI: standard deviation of its perturbations (actions in [-1, 1]).
    mppi_noise: float = 0.5
    #: The reward function planning scores with, "module:function" (default: the env's own, unirl.rewards).
    reward_fn: str = ""
    #: The termination function, "module:function" (default: the env's own, if it has one; none: episodes never
    #: end inside a plan).
    termination_fn: str = ""
    #: Learn the reward with the dynamics (a reward head) instead of computing it: true, false, or null (learn it
    #: when there is no reward function for the env).
    learn_reward: typing.Optional[bool] = None

    def validate(self) -> None:
        super().validate()
        if self.planner not in ("cem", "mppi"):
            raise UnirlError(f"config key `planner` must be \"cem\" or \"mppi\", got {self.planner!r}.")
        for key in ("ensemble_size", "horizon", "population", "num_elites", "planner_iterations", "num_particles"):
            if int(getattr(self, key)) < 1:
                raise UnirlError(f"config key `{key}` must be at least 1, got {getattr(self, key)}.")
        if self.num_particles % self.ensemble_size:
            raise UnirlError(f"config key `num_particles` ({self.num_particles}) must be a multiple of "
                             f"`ensemble_size` ({self.ensemble_size}): particle p follows member p mod "
                             f"{self.ensemble_size}.")
        if self.planner == "cem" and self.num_elites > self.population:
            raise UnirlError(f"config key `num_elites` ({self.num_elites}) cannot exceed `population` "
                             f"({self.population}).")
        if self.prioritized_replay:
            raise UnirlError("PETS replays uniformly: config key `prioritized_replay` must be false (a model's "
                             "errors are not TD errors).")
        if not 0.0 <= self.cem_alpha < 1.0:
            raise UnirlError(f"config key `cem_alpha` must lie in [0, 1), got {self.cem_alpha}.")


#: A small Pendulum config for the conformance suite's levels 1-4 (12 envs, 2 iterations of random steps first).
PENDULUM_RUN = {"env": "Pendulum-v1", "total_envs": 12, "train_batch_size": 24, "learning_starts": 48,
                "replay_batch_size": 32, "ensemble_size": 2, "num_particles": 2, "horizon": 4, "population": 12,
                "num_elites": 3, "planner_iterations": 2, "model": {"hidden_sizes": [16, 16], "activation": "swish"}}


class PETS(Algorithm):
    name = "PETS"
    config_class = PETSConfig
    module_kind = "dynamics"
    loss = staticmethod(gaussian_nll)
    execution = loops.SyncReplay(catch_up=True)
    conformance = ConformanceSpec(
        run_config=PENDULUM_RUN,
        # 50-step episodes, 12 steps per env and iteration: every env ends one every 4 to 5 iterations
        curve_config=dict(PENDULUM_RUN, env_config={"max_episode_steps": 50}, total_envs=4, train_batch_size=48,
                          learning_starts=48),
        learning={"config": {"env": "Pendulum-v1"}, "score": -200.0, "budget": 3_000, "eval_episodes": 10,
                  "eval_every": 400},
        notes="the model's loss is the Gaussian NLL; acting plans in NumPy against it",
    )

    @classmethod
    def policy_spec(cls, config: PETSConfig, env_spaces=None, seed=None) -> PolicySpec:
        """The ensemble, with the planner it acts by (plain data: both travel to the workers)."""
        import gymnasium as gym

        obs_space, act_space = env_spaces or spaces(config.env, config.env_config)
        if not isinstance(act_space, gym.spaces.Box) or not isinstance(obs_space, gym.spaces.Box) \
                or len(obs_space.shape) != 1:
            raise UnirlError(f"PETS plans continuous actions from flat observations; env `{config.env}` has "
                             f"observations {obs_space} and actions {act_space}.")
        check_batch_memory(config, obs_space)
        reward, termination = reward_functions(config.env, config.reward_fn, config.termination_fn,
                                               config.learn_reward)
        act_dim = int(np.prod(act_space.shape))
        planner = Planner(reward, termination, act_dim, np.asarray(act_space.low, np.float32).ravel(),
                          np.asarray(act_space.high, np.float32).ravel(), method=config.planner,
                          horizon=config.horizon, population=config.population, elites=config.num_elites,
                          iterations=config.planner_iterations, alpha=config.cem_alpha,
                          particles=config.num_particles, mppi_temperature=config.mppi_temperature,
                          mppi_noise=config.mppi_noise)
        model_config = config.model_config()
        model_config.validate()
        module = EnsembleDynamics(obs_space.shape[0], act_dim, PlannedActions(act_space.low, act_space.high),
                                  model_config, config.ensemble_size, planner, reward_head=reward is None)
        return PolicySpec(config.framework, module, config.seed if seed is None else seed, config.deterministic,
                          config.num_threads)

    def exploration(self, worker_id: int | None = None) -> dict:
        return {"random": float(self.timesteps_total < self.config.learning_starts)}

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.current_lr(), "logvar_bound_coef": self.config.logvar_bound_coef}

    def postprocess(self, batch: sb.SampleBatch) -> dict[str, np.ndarray]:
        """Transitions (s, a, s' - s) with each member's bootstrap counts, the steps that ended an episode with their
        final observation (a batch without terminal observations, TERM_OBS, leaves its terminated steps out)."""
        rows = n_step_rows(batch, 1.0, 1)
        keep = np.ones(len(rows[sb.OBS]), bool) if sb.TERM_INDEX in batch else rows[sb.TERMINATEDS] == 0.0
        obs, actions = rows[sb.OBS][keep], rows[sb.ACTIONS][keep]
        return {sb.OBS: obs, sb.ACTIONS: actions, DELTA: (rows[NEXT_OBS][keep] - obs).astype(np.float32),
                sb.REWARDS: rows[sb.REWARDS][keep],
                BOOTSTRAP: bootstrap_weights(self.config.seed, self.timesteps_total, len(obs),
                                             self.config.ensemble_size)}

    def learn_minibatches(self, minibatches: list, hp: dict, step: int):
        """The normalisation refit to everything in the buffer, then the model's gradient steps."""
        refit_normalization(self.policy, self.buffer.take(np.arange(len(self.buffer))))
        return super().learn_minibatches(minibatches, hp, step)

