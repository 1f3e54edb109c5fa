"""A3C (asynchronous advantage actor-critic, Mnih et al. 2016) on the async-gradients pattern.

Each worker is a learner on its own envs: it samples a fragment with the weights it was last
sent, computes n-step/GAE advantages and the actor-critic gradient locally, and returns the
gradient. The driver applies every gradient as it is consumed (the optimizer chain, clipping
included, runs on the driver: Adam's state is shared, as in the paper's shared RMSProp) and
sends the new weights back to that worker only.

Free-running runs are not bit-identical (the arrival order is the machine's); they are
replayable: `get_state()[1]["arrival_schedule"]` is the list of worker ids in the order their
gradients were applied, and the config key `arrival_schedule` replays it on any backend.
"""
from __future__ import annotations

from dataclasses import dataclass

from unirl.algorithm import Algorithm
from unirl.algorithms.a2c import A2CConfig, actor_critic_loss, advantages, loss_hyperparameters
from unirl.config import FragmentConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.execution import loops


@dataclass
class A3CConfig(A2CConfig, FragmentConfig):
    """A3C's options: A2C's loss and advantage options, plus those of every asynchronous algorithm."""

    # Defaults tuned for classic-control tasks: 2 workers x 8 envs x 8 steps per gradient.
    #: Rollout workers, each a learner on its own envs.
    num_workers: int = 2
    #: Env steps per training iteration, over all workers' gradients (a multiple of one worker's fragment).
    train_batch_size: int = 128
    #: Weight of the entropy bonus. 0.01 (A2C's default is 0): free-running on 2 workers, seeds 0-5 on
    #: multiprocessing and 0-2 on Ray all solve CartPole either way, but with 0.01 in a median of 59k
    #: steps (mp) and 79k (Ray) instead of 91k and 111k, and seed 0 on Ray in 135k instead of 231k.
    entropy_coeff: float = 0.01


def a3c_rows(policy, batch, config) -> dict:
    """A worker's rows: n-step/GAE advantages and value targets of its fragment, from its own copy of the values."""
    return advantages(policy, batch, config.gamma, config.gae_lambda)


class A3C(Algorithm):
    name = "A3C"
    config_class = A3CConfig
    module_kind = "actor_critic"
    supports_recurrent = True
    loss = staticmethod(actor_critic_loss)
    supports_normalization = False
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "rollout_fragment_length": 4, "train_batch_size": 96},
        curve_config={"env": "CartPole-v1", "total_envs": 16, "rollout_fragment_length": 8, "train_batch_size": 128},
        learning={"config": {"env": "CartPole-v1"}, "score": 475.0, "budget": 500_000, "eval_episodes": 20},
        reproducibility=REPLAYABLE,
        levels=(1, 3, 4, 5),
        notes="level 3 replays the local run's arrival schedule; each worker learns on its own envs, "
              "so worker counts are not compared with each other",
    )

    execution = loops.AsyncGradients(postprocess=a3c_rows)

    def hyperparameters(self) -> dict[str, float]:
        return loss_hyperparameters(self.config, self.current_lr())
