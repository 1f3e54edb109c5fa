"""A2C (synchronous advantage actor-critic, Mnih et al. 2016): n-step or GAE advantages, one gradient step per train batch.

The synchronous sibling of A3C: every worker samples with the same weights, the learner joins
the fragments in global env order, computes values and advantages over the joined batch and
takes one gradient step. Bit-identical across backends and worker counts (sync samples).
The loss (`actor_critic_loss`) is shared with A3C and IMPALA, which differ only in where the
advantages come from and how the gradient reaches the weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.config import AlgorithmConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.models import train_outputs
from unirl.postprocessing import actor_critic_rows


@dataclass
class A2CConfig(AlgorithmConfig):
    """A2C's options (plus those of every algorithm)."""

    # Defaults tuned for classic-control tasks: 8 envs x 8 steps per update.
    #: Env steps per gradient step, over all envs (rollout length = train_batch_size / total envs).
    train_batch_size: int = 64
    #: Discount factor.
    gamma: float = 0.99
    #: Adam learning rate.
    lr: float = 1e-3
    #: GAE lambda; 1.0 gives the n-step returns of the original A2C.
    gae_lambda: float = 1.0
    #: Weight of the value loss.
    vf_loss_coeff: float = 0.5
    #: Weight of the entropy bonus.
    entropy_coeff: float = 0.0
    #: Normalize advantages within each train batch.
    normalize_advantages: bool = False

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise UnirlError(f"config key `gae_lambda` must lie in [0, 1], got {self.gae_lambda}.")
        if self.vf_loss_coeff < 0 or self.entropy_coeff < 0:
            raise UnirlError("config keys `vf_loss_coeff` and `entropy_coeff` must not be negative.")


def actor_critic_loss(ops, module, params, batch, hp):
    """Policy gradient with given advantages, squared value error to given targets, entropy bonus.

    `batch`: obs, actions, advantages, value_targets (rows). A2C and A3C pass n-step/GAE
    advantages, IMPALA its V-trace policy-gradient advantages and targets.
    """
    dist = module.dist
    out = train_outputs(ops, module, params, batch)
    inputs, values = out["dist_inputs"], out["values"]
    logp = dist.logp(ops, inputs, batch[sb.ACTIONS])
    adv = batch[sb.ADVANTAGES]
    if "normalize_advantages" in hp:
        centered = adv - ops.mean(adv)
        adv = centered / (ops.sqrt(ops.mean(ops.square(centered))) + 1e-8)
    policy_loss = -ops.mean(logp * ops.stop_gradient(adv))
    vf_loss = 0.5 * ops.mean(ops.square(values - batch[sb.VALUE_TARGETS]))
    entropy = ops.mean(dist.entropy(ops, inputs))
    loss = policy_loss + hp["vf_loss_coeff"] * vf_loss - hp["entropy_coeff"] * entropy
    stats = {"policy_loss": policy_loss, "vf_loss": vf_loss, "entropy": entropy}
    return loss, stats


def advantages(policy, batch: sb.SampleBatch, gamma: float, lam: float) -> dict[str, np.ndarray]:
    """Flat rows [T * N] of obs, actions, advantages and value targets (see actor_critic_rows)."""
    rows = actor_critic_rows(policy, batch, gamma, lam)
    return sb.train_columns(rows, (sb.OBS, sb.ACTIONS, sb.ADVANTAGES, sb.VALUE_TARGETS))


def loss_hyperparameters(config, lr: float) -> dict[str, float]:
    """The hyperparameters actor_critic_loss and the optimizer read."""
    hp = {"lr": lr, "vf_loss_coeff": config.vf_loss_coeff, "entropy_coeff": config.entropy_coeff}
    if getattr(config, "normalize_advantages", False):
        hp["normalize_advantages"] = 1.0
    return hp


class A2C(Algorithm):
    name = "A2C"
    config_class = A2CConfig
    module_kind = "actor_critic"
    supports_recurrent = True
    loss = staticmethod(actor_critic_loss)
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "train_batch_size": 96},
        curve_config={"env": "CartPole-v1", "total_envs": 8, "train_batch_size": 64},
        learning={"config": {"env": "CartPole-v1"}, "score": 475.0, "budget": 500_000, "eval_episodes": 20},
    )

    execution = loops.SyncSamples()

    def postprocess(self, batch: sb.SampleBatch) -> dict[str, np.ndarray]:
        """Advantages and value targets on the learner, over the batch joined in env order."""
        return advantages(self.policy, batch, self.config.gamma, self.config.gae_lambda)

    def hyperparameters(self) -> dict[str, float]:
        return loss_hyperparameters(self.config, self.current_lr())
