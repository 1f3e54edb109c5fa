"""TD3 (Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods") on the "sync replay"
execution pattern; DDPG (Lillicrap et al. 2016) is the TD3 config `{"twin_q": false, "policy_delay": 1, "target_noise": 0}`.

- critics (`q1/`, `q2/`): squared errors against y = r + gamma^k (1 - d) min_i Q_targ,i(s', a'), with the
  target action smoothed, a' = clip(pi_targ(s') + clip(sigma eps, -c, c), -1, 1) (clipped double Q);
- actor (`pi/`): -Q1(s, pi(s)), every `policy_delay` critic updates (delayed policy updates), followed by
  Polyak averaging of every target network (`tau`).

The smoothing normals eps come with each minibatch, keyed by (run seed, gradient step); acting adds Gaussian
noise (`exploration_noise`) from each env's own stream; before `learning_starts` env steps, actions are
uniform. So every backend and worker count gives the same bits.
"""
from __future__ import annotations

from dataclasses import dataclass

from unirl import sample_batch as sb
from unirl.algorithms.dqn import DISCOUNTS, NEXT_OBS
from unirl.algorithms.sac import (NEXT_NOISE, PENDULUM_CURVE, PENDULUM_RUN, OffPolicyActorCritic,
                                  OffPolicyActorCriticConfig)
from unirl.conformance_spec import ConformanceSpec
from unirl.errors import UnirlError
from unirl.policy import Learner, Polyak
from unirl.replay import WEIGHTS


@dataclass
class TD3Config(OffPolicyActorCriticConfig):
    """TD3's options (SB3's defaults: lr 1e-3, [256, 256], batch 256, tau 0.005, policy delay 2, 100 random steps)."""

    lr: float = 1e-3
    policy_delay: int = 2
    #: Clipped double Q: the smaller of two critics' targets (False: one critic, DDPG).
    twin_q: bool = True
    #: Standard deviation of the Gaussian exploration noise added to actions (in the [-1, 1] action scale).
    exploration_noise: float = 0.1
    #: Standard deviation of the target policy smoothing noise (0: none, DDPG).
    target_noise: float = 0.2
    #: The smoothing noise is clipped to +- this.
    target_noise_clip: float = 0.5

    def validate(self) -> None:
        super().validate()
        if self.exploration_noise < 0 or self.target_noise < 0 or self.target_noise_clip < 0:
            raise UnirlError("config keys `exploration_noise`, `target_noise` and `target_noise_clip` must not be "
                             "negative.")


def td3_target(ops, module, target_params, batch, hp):
    """r + gamma^k (1 - terminated) min_i Q_targ,i(s', a') with the smoothed target action a' (stop-gradient)."""
    next_obs = batch[NEXT_OBS]
    c = hp["target_noise_clip"]
    smoothing = ops.clip(hp["target_noise"] * batch[NEXT_NOISE], -c, c)
    a_next = ops.clip(module.forward_inference(ops, target_params, next_obs) + smoothing, -1.0, 1.0)
    q_next = module.q(ops, target_params, "q1", next_obs, a_next)
    if "twin_q" in hp:
        q_next = ops.minimum(q_next, module.q(ops, target_params, "q2", next_obs, a_next))
    return ops.stop_gradient(batch[sb.REWARDS] + batch[DISCOUNTS] * (1.0 - batch[sb.TERMINATEDS]) * q_next)


def td3_critic_loss(ops, module, params, batch, hp, target_params):
    """E[(Q1(s, a) - y)^2] + E[(Q2(s, a) - y)^2] (Q1 only without twin_q), importance-weighted under prioritized replay."""
    y = td3_target(ops, module, target_params, batch, hp)
    obs, actions, w = batch[sb.OBS], batch[sb.ACTIONS], batch[WEIGHTS]
    q1 = module.q(ops, params, "q1", obs, actions)
    loss = ops.mean(w * ops.square(q1 - y))
    if "twin_q" in hp:
        loss = loss + ops.mean(w * ops.square(module.q(ops, params, "q2", obs, actions) - y))
    td = ops.stop_gradient(q1 - y)
    return loss, {"mean_q": ops.mean(ops.stop_gradient(q1)), "mean_td_error": ops.mean(ops.abs(td)), "td_error": td}


def td3_actor_loss(ops, module, params, batch, hp, target_params):
    """-E[Q1(s, pi(s))]: the deterministic policy gradient through the first critic (a constant here)."""
    obs = batch[sb.OBS]
    return -ops.mean(module.q(ops, params, "q1", obs, module.forward_inference(ops, params, obs))), {}


class TD3(OffPolicyActorCritic):
    name = "TD3"
    config_class = TD3Config
    module_kind = "deterministic_actor_q"
    learners = (Learner("critic", td3_critic_loss, trains=("q1/", "q2/")),
                Learner("actor", td3_actor_loss, trains=("pi/",)))
    conformance = ConformanceSpec(
        run_config=PENDULUM_RUN, curve_config=PENDULUM_CURVE,
        learning={"config": {"env": "Pendulum-v1"}, "score": -200.0, "budget": 30_000, "eval_episodes": 10,
                  "eval_every": 2000},
    )

    @classmethod
    def build_learners(cls, config: TD3Config) -> tuple:
        """The critic learner trains q1 only without twin_q (DDPG)."""
        critic, actor = cls.learners
        return (critic if config.twin_q else Learner(critic.name, critic.loss, ("q1/",)), actor)

    def exploration(self, worker_id: int | None = None) -> dict:
        return {"random": float(self.timesteps_total < self.config.learning_starts),
                "noise_scale": self.config.exploration_noise}

    def hyperparameters(self) -> dict[str, float]:
        c = self.config
        hp = {"lr": self.current_lr(), "tau": c.tau, "target_noise": c.target_noise,
              "target_noise_clip": c.target_noise_clip}
        if c.twin_q:
            hp["twin_q"] = 1.0
        return hp

    def learn_minibatch(self, rows: dict, hp: dict, step: int):
        """A critic step; every policy_delay-th also an actor step, then the targets' Polyak update."""
        rows[NEXT_NOISE] = self.learner_normals(step, len(rows[sb.OBS]), self.policy.dist.dim)
        if (step + 1) % self.config.policy_delay == 0:
            return self.policy.learn_on_batch(rows, hp, learners=("critic", "actor"), then=(Polyak(tau="tau"),))
        return self.policy.learn_on_batch(rows, hp, learners=("critic",))
