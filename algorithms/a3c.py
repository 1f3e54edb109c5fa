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

import numpy as np

from unirl.algorithm import Algorithm
from unirl.algorithms.a2c import A2CConfig, actor_critic_loss, advantages, loss_hyperparameters
from unirl.config import FragmentConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.execution import AsyncGradients


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


@dataclass
class A3CLearner:
    """What a worker needs to learn (plain data, pickles): the policy with the loss, and the gradient of a fragment."""

    gamma: float
    gae_lambda: float

    def build_policy(self, policy_spec):
        return policy_spec.build(loss=actor_critic_loss)

    def gradients(self, policy, batch, hp):
        rows = advantages(policy, batch, self.gamma, self.gae_lambda)
        return policy.compute_gradients(rows, hp)


class A3C(Algorithm):
    name = "A3C"
    config_class = A3CConfig
    module_kind = "actor_critic"
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

    def setup(self) -> None:
        c = self.config
        specs = self.worker_specs()
        for s in specs:
            s.rollout_length = c.rollout_fragment_length
        self.pattern = AsyncGradients(self.backend, specs, A3CLearner(c.gamma, c.gae_lambda),
                                      replay=c.arrival_schedule, timeout=c.worker_timeout_s or None)
        self.version = 0  # gradients applied so far: the weights version
        self.lags: list[int] = []
        if self.backend.runs_in_driver:
            # Workers in this process: their learning calls reach this policy's recorder (the
            # conformance suite captures an algorithm's own loss inputs that way).
            for w in self.pattern.workers:
                self.backend.get(self.backend.call(w, "set_recorder", self._recorder))

    def _recorder(self, kind, policy, batch, hp):
        if self.policy.recorder is not None:
            self.policy.recorder(kind, policy, batch, hp)

    def hyperparameters(self) -> dict[str, float]:
        return loss_hyperparameters(self.config, self.current_lr())

    def training_step(self) -> dict:
        hp = self.hyperparameters()
        for wid in self.pattern.idle_workers:
            self.pattern.submit(wid, self.policy.get_flat_weights(), hp, self.version)
        steps, stats, lags = 0, [], []
        while steps < self.config.train_batch_size:
            result = self.pattern.next()
            grad, worker_stats, counters = result.value
            self.record_batch(counters)
            steps += counters.count
            lags.append(self.version - result.version)
            self.policy.apply_gradients(grad, hp)
            self.version += 1
            stats.append(worker_stats)
            hp = self.hyperparameters()
            self.pattern.submit(result.worker_id, self.policy.get_flat_weights(), hp, self.version)
        self.lags.extend(lags)
        out = {k: float(np.mean([s[k] for s in stats])) for k in stats[0]}
        out.update(lr=hp["lr"], num_gradients=len(stats), policy_lag_mean=float(np.mean(lags)),
                   policy_lag_max=int(max(lags)), weights_version=self.version)
        return out

    def get_state(self):
        arrays, state = super().get_state()
        state["arrival_schedule"] = list(self.pattern.schedule.recorded)
        state["weights_version"] = self.version
        return arrays, state

    def set_state(self, arrays, state) -> None:
        super().set_state(arrays, state)
        self.version = state.get("weights_version", 0)
