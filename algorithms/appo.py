"""APPO (asynchronous PPO, as RLlib's): PPO's clipped surrogate on IMPALA's async-samples pattern with V-trace.

Actors sample with the weights they were last sent; the learner computes V-trace value targets and
policy-gradient advantages over the fragments it consumed (IMPALA's postprocessing) and takes a step
on PPO's loss, whose ratio is taken against the behaviour policy's log-probabilities, clipped at
1 +- clip_param: the clip bounds how far a step moves from the (stale) policy that acted.
"""
from __future__ import annotations

from dataclasses import dataclass

from unirl import sample_batch as sb
from unirl.algorithms.impala import IMPALA, IMPALAConfig
from unirl.algorithms.ppo import ppo_loss
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec


@dataclass
class APPOConfig(IMPALAConfig):
    """APPO's options: IMPALA's, plus PPO's clip."""

    #: Clip of the ratio of the learner's policy to the behaviour policy.
    clip_param: float = 0.2


class APPO(IMPALA):
    name = "APPO"
    config_class = APPOConfig
    loss = staticmethod(ppo_loss)
    train_columns = IMPALA.train_columns + (sb.LOGP,)
    conformance = ConformanceSpec(
        run_config=IMPALA.conformance.run_config, curve_config=IMPALA.conformance.curve_config,
        learning={"config": {"env": "CartPole-v1"}, "score": 475.0, "budget": 500_000, "eval_episodes": 20},
        reproducibility=REPLAYABLE, levels=(1, 3, 4, 5),
        notes="level 3 replays the local run's arrival schedule at the same worker count",
    )

    def hyperparameters(self) -> dict[str, float]:
        return dict(super().hyperparameters(), clip_param=self.config.clip_param)
