"""SAC (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications": automatic entropy tuning) on the
"sync replay" execution pattern; for Discrete actions, discrete SAC (Christodoulou 2019).

Three losses, each with its own parameters and optimizer (unirl.policy.Learner), in one compiled step:

- critics (`q1/`, `q2/`): soft Bellman residuals against y = r + gamma^k (1 - d) (min_i Q_targ,i(s', a') - alpha log pi(a'|s')),
  a' ~ pi(.|s') (n-step rows as DQN's);
- actor (`pi/`): E[alpha log pi(a|s) - min_i Q_i(s, a)], a = tanh(mu + sigma z) reparameterised;
- temperature (`log_alpha`): -log alpha (log pi(a|s) + target entropy), the entropy held near -|A|;

then the target critics follow by Polyak averaging (`tau`). The learner's normals z come with each minibatch,
keyed by (run seed, gradient step), and acting's from each env's own noise stream, so every backend and
worker count gives the same bits. Before `learning_starts` env steps, actions are uniform.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.algorithms.dqn import DISCOUNTS, NEXT_OBS, n_step_rows
from unirl.config import ReplayConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.policy import Learner, Polyak
from unirl.replay import WEIGHTS
from unirl.seeding import StepNormals

#: Replayed minibatch columns the learner adds: standard normals for the actor's sample at s, and at s'.
NOISE = "noise"
NEXT_NOISE = "next_noise"


@dataclass
class OffPolicyActorCriticConfig(ReplayConfig):
    """Options SAC and TD3 share: the replay, the networks, n-step targets and the soft target update."""

    #: Envs stepped together in each worker.
    num_envs_per_worker: int = 1
    #: Env steps sampled per iteration, over all envs (a multiple of the number of envs).
    train_batch_size: int = 12
    #: Adam learning rate of every learner.
    lr: float = 3e-4
    #: Clip each learner's gradient to this global norm (0 disables).
    grad_clip: float = 0.0
    #: Actor and critic towers (unirl.models.ModelConfig).
    model: dict = field(default_factory=lambda: {"hidden_sizes": [256, 256], "activation": "relu"})
    #: Steps of the n-step return of the critics' targets.
    n_step: int = 1
    #: Polyak coefficient of the target critics: target <- (1 - tau) target + tau online.
    tau: float = 0.005
    #: Rows the replay buffer holds.
    replay_buffer_capacity: int = 1_000_000
    #: Rows in each replayed minibatch.
    replay_batch_size: int = 256
    #: Env steps of uniform random actions before the first gradient step.
    learning_starts: int = 100
    #: Gradient steps per env step once learning has started.
    training_intensity: float = 1.0
    #: Update the actor (and the temperature, and TD3's targets) every this many critic updates.
    policy_delay: int = 1

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.tau <= 1.0:
            raise UnirlError(f"config key `tau` must lie in (0, 1], got {self.tau}.")
        if self.n_step < 1 or self.policy_delay < 1:
            raise UnirlError("config keys `n_step` and `policy_delay` must be at least 1.")


@dataclass
class SACConfig(OffPolicyActorCriticConfig):
    """SAC's options (SB3's defaults: lr 3e-4, [256, 256], batch 256, tau 0.005, 100 random steps)."""

    #: Learn the temperature alpha towards `target_entropy` (False: keep it at initial_alpha).
    autotune_alpha: bool = True
    #: The temperature at the start.
    initial_alpha: float = 1.0
    #: Target entropy of the temperature's loss (None: -dim(A) for Box actions, 0.89 log n for n discrete ones).
    target_entropy: typing.Optional[float] = None
    #: Update the target critics every this many critic updates.
    target_update_interval: int = 1

    def validate(self) -> None:
        super().validate()
        if self.initial_alpha <= 0:
            raise UnirlError(f"config key `initial_alpha` must be positive, got {self.initial_alpha}.")
        if self.target_update_interval < 1:
            raise UnirlError("config key `target_update_interval` must be at least 1.")


def min_q(ops, module, params, obs, actions):
    return ops.minimum(module.q(ops, params, "q1", obs, actions), module.q(ops, params, "q2", obs, actions))


def soft_target(ops, module, params, target_params, batch, alpha):
    """r + gamma^k (1 - terminated) V_targ(s'), the soft value under the current policy (stop-gradient)."""
    next_obs = batch[NEXT_OBS]
    next_inputs = module.forward_inference(ops, params, next_obs)
    if module.discrete:  # the expectation over the next action, exactly
        logp = ops.log_softmax(next_inputs)
        q = ops.minimum(module.q(ops, target_params, "q1", next_obs), module.q(ops, target_params, "q2", next_obs))
        v_next = ops.sum(ops.exp(logp) * (q - alpha * logp), axis=-1)
    else:
        a_next, logp_next = module.dist.rsample(ops, next_inputs, batch[NEXT_NOISE])
        v_next = min_q(ops, module, target_params, next_obs, a_next) - alpha * logp_next
    return ops.stop_gradient(batch[sb.REWARDS] + batch[DISCOUNTS] * (1.0 - batch[sb.TERMINATEDS]) * v_next)


def temperature(ops, params):
    return ops.exp(ops.stop_gradient(params["log_alpha"]))


def critic_loss(ops, module, params, batch, hp, target_params):
    """0.5 (E[(Q1(s, a) - y)^2] + E[(Q2(s, a) - y)^2]), importance-weighted under prioritized replay."""
    y = soft_target(ops, module, params, target_params, batch, temperature(ops, params))
    obs, actions = batch[sb.OBS], batch[sb.ACTIONS]
    if module.discrete:
        q1 = ops.take_along_last(module.q(ops, params, "q1", obs), actions)
        q2 = ops.take_along_last(module.q(ops, params, "q2", obs), actions)
    else:
        q1, q2 = module.q(ops, params, "q1", obs, actions), module.q(ops, params, "q2", obs, actions)
    w = batch[WEIGHTS]
    loss = 0.5 * (ops.mean(w * ops.square(q1 - y)) + ops.mean(w * ops.square(q2 - y)))
    td = ops.stop_gradient(q1 - y)
    return loss, {"mean_q": ops.mean(ops.stop_gradient(q1)), "mean_td_error": ops.mean(ops.abs(td)), "td_error": td}


def actor_loss(ops, module, params, batch, hp, target_params):
    """E[alpha log pi(a|s) - min_i Q_i(s, a)] over the reparameterised a ~ pi(.|s) (the critics are constants here)."""
    obs, alpha = batch[sb.OBS], temperature(ops, params)
    inputs = module.forward_inference(ops, params, obs)
    if module.discrete:
        logp = ops.log_softmax(inputs)
        q = ops.minimum(module.q(ops, params, "q1", obs), module.q(ops, params, "q2", obs))
        loss = ops.mean(ops.sum(ops.exp(logp) * (alpha * logp - q), axis=-1))
        entropy = -ops.sum(ops.exp(logp) * logp, axis=-1)
    else:
        actions, logp = module.dist.rsample(ops, inputs, batch[NOISE])
        loss = ops.mean(alpha * logp - min_q(ops, module, params, obs, actions))
        entropy = -logp
    return loss, {"entropy": ops.mean(ops.stop_gradient(entropy))}


def alpha_loss(ops, module, params, batch, hp, target_params):
    """-log alpha (log pi(a|s) + target entropy), averaged: alpha rises while the entropy is below its target."""
    inputs = ops.stop_gradient(module.forward_inference(ops, params, batch[sb.OBS]))
    if module.discrete:
        logp = ops.log_softmax(inputs)
        neg_entropy = ops.sum(ops.exp(logp) * logp, axis=-1)
    else:
        _, neg_entropy = module.dist.rsample(ops, inputs, batch[NOISE])
    log_alpha = params["log_alpha"]
    loss = -ops.mean(log_alpha * ops.stop_gradient(neg_entropy + hp["target_entropy"]))
    return loss, {"alpha": ops.sum(ops.exp(ops.stop_gradient(log_alpha)))}


#: The small Pendulum configs SAC's and TD3's conformance specs share.
PENDULUM_RUN = {"env": "Pendulum-v1", "total_envs": 12, "train_batch_size": 24, "learning_starts": 24,
                "replay_batch_size": 32, "training_intensity": 0.5,
                "model": {"hidden_sizes": [32, 32], "activation": "relu"}}
#: 50 steps per env and iteration: every env ends an episode (200 steps) every 4 iterations.
PENDULUM_CURVE = {"env": "Pendulum-v1", "total_envs": 4, "train_batch_size": 200, "learning_starts": 200,
                  "replay_batch_size": 32, "training_intensity": 0.25,
                  "model": {"hidden_sizes": [32, 32], "activation": "relu"}}


class OffPolicyActorCritic(Algorithm):
    """What SAC and TD3 share: online and target sets, n-step rows on the sync replay pattern, and the learner's
    normals of each gradient step (keyed by the run seed and the step: every backend, every worker count and a
    resumed run draw the same). Each learner gets the algorithm's optimizer (Adam, clipped if grad_clip)."""

    param_sets = ("params", "target_params")
    execution = loops.SyncReplay()

    def setup(self) -> None:
        self.learner_normals = StepNormals(self.config.seed)
        super().setup()

    def postprocess(self, batch: sb.SampleBatch) -> dict[str, np.ndarray]:
        return n_step_rows(batch, self.config.gamma, self.config.n_step)


class SAC(OffPolicyActorCritic):
    name = "SAC"
    config_class = SACConfig
    module_kind = "actor_q"
    learners = (Learner("critic", critic_loss, trains=("q1/", "q2/")),
                Learner("actor", actor_loss, trains=("pi/",)),
                Learner("alpha", alpha_loss, trains=("log_alpha",)))
    conformance = ConformanceSpec(
        run_config=PENDULUM_RUN, curve_config=PENDULUM_CURVE,
        learning={"config": {"env": "Pendulum-v1", "lr": 1e-3}, "score": -200.0, "budget": 20_000,
                  "eval_episodes": 10, "eval_every": 2000},
    )

    @classmethod
    def build_learners(cls, config: SACConfig) -> tuple:
        """No temperature learner when alpha is fixed."""
        return tuple(l for l in cls.learners if config.autotune_alpha or l.name != "alpha")

    @classmethod
    def policy_spec(cls, config, env_spaces=None, seed=None):
        spec = super().policy_spec(config, env_spaces, seed)
        spec.module.initial_log_alpha = math.log(config.initial_alpha)
        return spec

    def exploration(self, worker_id: int | None = None) -> dict:
        return {"random": float(self.timesteps_total < self.config.learning_starts)}

    def target_entropy(self) -> float:
        c, dist = self.config, self.policy.dist
        if c.target_entropy is not None:
            return float(c.target_entropy)
        return 0.89 * math.log(dist.n) if self.policy.module.discrete else -float(dist.dim)

    def hyperparameters(self) -> dict[str, float]:
        return {"lr": self.current_lr(), "tau": self.config.tau, "target_entropy": self.target_entropy()}

    def add_normals(self, rows: dict, step: int) -> dict:
        """The step's standard normals for the actor's samples at s and s' (Box actions; discrete SAC needs none)."""
        if not self.policy.module.discrete:
            d = self.policy.dist.dim
            z = self.learner_normals(step, len(rows[sb.OBS]), 2 * d)
            rows[NOISE], rows[NEXT_NOISE] = z[:, :d], z[:, d:]
        return rows

    def learn_minibatch(self, rows: dict, hp: dict, step: int):
        """The critics every step; the actor and the temperature every policy_delay-th (None: every learner); the
        targets' Polyak update every target_update_interval-th."""
        c = self.config
        learners = None if (step + 1) % c.policy_delay == 0 else ("critic",)
        then = (Polyak(tau="tau"),) if (step + 1) % c.target_update_interval == 0 else ()
        return self.policy.learn_on_batch(self.add_normals(rows, step), hp, learners=learners, then=then)

    def learn_minibatches(self, minibatches: list, hp: dict, step: int):
        """Every step alike (no delay): one call for all of them (on JAX, one compiled scan over the steps)."""
        c = self.config
        if c.policy_delay != 1 or c.target_update_interval != 1:
            return super().learn_minibatches(minibatches, hp, step)
        rows = [self.add_normals(r, step + i) for i, r in enumerate(minibatches)]
        stacked = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        return self.policy.learn_on_batches(stacked, hp, then=(Polyak(tau="tau"),))
