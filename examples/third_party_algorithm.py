"""A new algorithm on unirl's public API: vanilla policy gradient with a learned value baseline.

    python examples/third_party_algorithm.py                        # train it on CartPole-v1
    PYTHONPATH=. unirl train --run=examples.third_party_algorithm:VPG --stop='{"timesteps_total": 50000}'
    PYTHONPATH=. unirl conformance --quick --framework torch --backend local --algo examples.third_party_algorithm:VPG

(The last two from the repository root; `PYTHONPATH=.` makes `examples` importable by the `unirl` command.) The algorithm is a
config dataclass, a NumPy postprocessing step, a loss on the neutral ops, and the execution
pattern it runs on; nothing in unirl knows it, and it runs on every framework and backend. Its
conformance spec lets the suite prove it is bit-identical across backends and worker counts.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

import unirl
from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.config import AlgorithmConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.execution import loops

RETURNS = "returns"


@dataclass
class VPGConfig(AlgorithmConfig):
    """VPG's options (plus those every algorithm has)."""

    #: Adam learning rate.
    lr: float = 1e-2
    #: Weight of the value (baseline) loss.
    vf_loss_coeff: float = 0.5


def vpg_loss(ops, module, params, batch, hp):
    """-mean(log pi(a|s) (G - V(s))) + c (G - V(s))^2, written once on the neutral ops."""
    out = module.forward_train(ops, params, batch[sb.OBS])
    logp = module.dist.logp(ops, out["dist_inputs"], batch[sb.ACTIONS])
    advantage = ops.stop_gradient(batch[RETURNS] - out["values"])
    policy_loss = -ops.mean(logp * advantage)
    vf_loss = ops.mean(ops.square(batch[RETURNS] - out["values"]))
    return policy_loss + hp["vf_loss_coeff"] * vf_loss, {"policy_loss": policy_loss, "vf_loss": vf_loss}


def returns_to_go(rewards: np.ndarray, dones: np.ndarray, gamma: float) -> np.ndarray:
    """Discounted returns [T, N] within each env's fragment; an episode's end resets the sum."""
    out, running = np.zeros(rewards.shape, np.float32), np.zeros(rewards.shape[1], np.float32)
    for t in reversed(range(len(rewards))):
        running = rewards[t] + np.float32(gamma) * running * (~dones[t])
        out[t] = running
    return out


class VPG(Algorithm):
    """Vanilla policy gradient with a baseline, on the synchronous-samples pattern (as PPO and A2C)."""

    name = "VPG"
    config_class = VPGConfig
    module_kind = "actor_critic"
    loss = staticmethod(vpg_loss)
    execution = loops.SyncSamples()
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "train_batch_size": 96},
        curve_config={"env": "CartPole-v1", "total_envs": 4, "train_batch_size": 128},
        levels=(1, 2, 3, 4))

    def hyperparameters(self) -> dict:
        return dict(super().hyperparameters(), vf_loss_coeff=self.config.vf_loss_coeff)

    def postprocess(self, batch: sb.SampleBatch) -> dict:
        T, N = batch.num_steps, batch.num_envs
        ret = returns_to_go(batch[sb.REWARDS], batch[sb.TERMINATEDS] | batch[sb.TRUNCATEDS], self.config.gamma)
        return {sb.OBS: batch[sb.OBS].reshape((T * N,) + batch[sb.OBS].shape[2:]),
                sb.ACTIONS: batch[sb.ACTIONS].reshape((T * N,) + batch[sb.ACTIONS].shape[2:]),
                RETURNS: ret.reshape(-1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50_000)
    p.add_argument("--framework", default="torch")
    args = p.parse_args(argv)
    with VPG({"env": "CartPole-v1", "framework": args.framework, "seed": 0}) as algo:
        while (result := algo.train())["timesteps_total"] < args.steps:
            pass
    print(f"VPG: {result['timesteps_total']} env steps, training return {result['episode_return_mean']:.1f}")
    return result


if __name__ == "__main__":
    main()
