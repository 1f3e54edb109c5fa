"""Async DQN: asynchronous n-step Q-learning (Mnih et al. 2016), composed of DQN's parts on the async-gradients pattern.

Each worker acts epsilon-greedily with a final epsilon of its own (the paper samples 0.1, 0.01 or
0.5 per thread; here worker i takes entry i of a list), turns its fragment into n-step rows
(DQN's `n_step_rows`) and computes the gradient of DQN's loss against the target network it was
sent with the weights. The driver applies every gradient as it arrives (the shared optimizer)
and copies the online network into the target network every `target_update_period` gradients.
Replayable like A3C: the recorded arrival schedule replays the run bit for bit on any backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithm import Algorithm
from unirl.algorithms.dqn import DQN, QLearningConfig, dqn_loss, n_step_rows
from unirl.config import FragmentConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.execution import loops
from unirl.optim import linear_schedule
from unirl.replay import WEIGHTS


@dataclass
class AsyncDQNConfig(QLearningConfig, FragmentConfig):
    """Async DQN's options: Q-learning's (loss, network, epsilon schedule) and those of every asynchronous algorithm."""

    # Defaults tuned on CartPole-v1 (docs/execution.md): 4 workers x 8 envs x 8 steps per gradient, 8-step
    # returns, Adam's rate decaying linearly 1e-3 -> 1e-4 over 1M env steps (online Q-learning forgets without it).
    #: Workers, each a learner on its own envs.
    num_workers: int = 4
    #: Envs stepped together in each worker.
    num_envs_per_worker: int = 8
    #: Steps each env takes per gradient.
    rollout_fragment_length: int = 8
    #: Steps of the n-step return (cut at episode and fragment ends: the paper's "t_max" returns).
    n_step: int = 8
    #: Env steps per training iteration, over all workers' gradients.
    train_batch_size: int = 256
    #: Adam's learning rate at the start.
    lr: float = 1e-3
    #: Env steps over which the learning rate decays linearly to lr_final.
    lr_decay_timesteps: int = 1_000_000
    #: The learning rate reached after lr_decay_timesteps.
    lr_final: float = 1e-4
    #: The Q-network.
    model: dict = field(default_factory=lambda: {"hidden_sizes": [64, 64], "activation": "relu"})
    #: Final epsilon of worker i: entry i modulo the list's length ([]: exploration_final_eps for every worker).
    exploration_final_eps_per_worker: list = field(default_factory=lambda: [0.1, 0.01, 0.5])
    #: Gradients applied between two copies of the online network into the target network.
    target_update_period: int = 50


def async_dqn_rows(policy, batch, config) -> dict:
    """A worker's rows: n-step transitions of its fragment, every row weighted 1 (no replay, no priorities)."""
    rows = n_step_rows(batch, config.gamma, config.n_step)
    rows[WEIGHTS] = np.ones(len(rows[sb.REWARDS]), np.float32)
    return rows


class AsyncDQN(Algorithm):
    name = "ASYNC_DQN"
    config_class = AsyncDQNConfig
    module_kind = "q"
    loss = staticmethod(dqn_loss)
    param_sets = ("params", "target_params")
    execution = loops.AsyncGradients(postprocess=async_dqn_rows)
    supports_normalization = False
    hyperparameters = DQN.hyperparameters
    inert_config_keys = {"exploration_final_eps": "read only when exploration_final_eps_per_worker is []"}
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "rollout_fragment_length": 4, "train_batch_size": 96,
                    "target_update_period": 3, "model": {"hidden_sizes": [32, 32], "activation": "relu"}},
        # The workers exploring with epsilon 0.5 keep the training mean far below 475: evaluate every 25k steps.
        learning={"config": {"env": "CartPole-v1"}, "score": 475.0, "budget": 1_000_000, "eval_episodes": 20,
                  "eval_every": 25_000},
        reproducibility=REPLAYABLE, levels=(1, 3, 4, 5),
        notes="level 3 replays the local run's arrival schedule; each worker learns on its own envs",
    )

    def exploration(self, worker_id: int | None = None) -> dict:
        c = self.config
        finals = c.exploration_final_eps_per_worker
        final = finals[worker_id % len(finals)] if finals and worker_id is not None else c.exploration_final_eps
        return {"epsilon": linear_schedule(self.timesteps_total, c.exploration_initial_eps, final,
                                           c.exploration_timesteps)}

    def after_update(self) -> None:
        if self.execution.version % self.config.target_update_period == 0:
            self.policy.copy_params("params", "target_params")
