"""REINFORCE (Williams 1992) written on unirl's public API only: a config, a loss on the neutral ops, NumPy
returns-to-go, the SyncSamples execution pattern and a ConformanceSpec. Nothing in unirl knows it; the conformance
suite checks it as `--algo reinforce_plugin:REINFORCE` (tests/ on PYTHONPATH) or `tests.reinforce_plugin:REINFORCE`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.config import AlgorithmConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.execution import loops

RETURNS = "returns"


@dataclass
class REINFORCEConfig(AlgorithmConfig):
    #: Adam learning rate.
    lr: float = 1e-2
    #: Standardize the returns-to-go of each batch (a constant baseline and scale).
    normalize_returns: bool = True


def reinforce_loss(ops, module, params, batch, hp):
    """-mean(log pi(a|s) * G): the score-function gradient of the expected return."""
    inputs = module.forward_train(ops, params, batch[sb.OBS])["dist_inputs"]
    logp = module.dist.logp(ops, inputs, batch[sb.ACTIONS])
    loss = -ops.mean(logp * batch[RETURNS])
    return loss, {"mean_logp": ops.mean(ops.stop_gradient(logp)), "entropy": ops.mean(module.dist.entropy(ops, inputs))}


def returns_to_go(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns [T, N] within each env's fragment; an episode's end resets the sum (no bootstrap)."""
    out = np.zeros(rewards.shape, np.float32)
    running = np.zeros(rewards.shape[1], np.float32)
    for t in reversed(range(len(rewards))):
        running = rewards[t] + np.float32(gamma) * running * (~dones[t])
        out[t] = running
    return out


class REINFORCE(Algorithm):
    name = "REINFORCE"
    config_class = REINFORCEConfig
    module_kind = "policy"
    loss = staticmethod(reinforce_loss)
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "train_batch_size": 96},
        curve_config={"env": "CartPole-v1", "total_envs": 4, "train_batch_size": 128},
        levels=(1, 2, 3, 4),
    )

    execution = loops.SyncSamples()

    def postprocess(self, batch: sb.SampleBatch) -> dict[str, np.ndarray]:
        T, N = batch.num_steps, batch.num_envs
        ret = returns_to_go(batch[sb.REWARDS], batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS], self.config.gamma)
        if self.config.normalize_returns:
            ret = ((ret - ret.mean()) / (ret.std() + 1e-8)).astype(np.float32)
        return {sb.OBS: batch[sb.OBS].reshape((T * N,) + batch[sb.OBS].shape[2:]),
                sb.ACTIONS: batch[sb.ACTIONS].reshape((T * N,) + batch[sb.ACTIONS].shape[2:]),
                RETURNS: ret.reshape(-1)}
