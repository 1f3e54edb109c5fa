"""Ape-X DQN (Horgan et al. 2018): distributed prioritized replay on the "async replay" execution pattern.

Actors act epsilon-greedily with one epsilon per env, eps_i = eps ** (1 + alpha * i / (N - 1)) keyed
by the GLOBAL env index i of N (so the split of envs over actors changes no epsilon), build n-step
rows and their initial priorities with their own copy of the network, and return them; the driver
sends them to replay shards (stateful workers on the backend); the learner pulls prioritized
minibatches from the shards, learns with DQN's loss (double Q, Huber, target network) and sends
the new priorities back. Actors get fresh weights every `weight_sync_period` learner steps.

The learner runs free of the actors, as in the paper: it takes a gradient step whenever no actor
result is waiting (at most `training_intensity` steps per env step sampled, the cap), so actors
are relaunched at once and the replay ratio is what the machine gives; it is recorded.

Asynchronous, so free-running runs differ; a run is replayable: `get_state()[1]["arrival_schedule"]`
lists the driver's choices in order, an actor id for each result consumed and `num_workers` (the
learner's id) for each learner turn, and the config key `arrival_schedule` replays it bit for bit
on any backend (same number of actors).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithms.dqn import DISCOUNTS, NEXT_OBS, DQN, DQNConfig, n_step_rows
from unirl.config import AsyncReplayConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution import loops
from unirl.execution.async_replay import REPLAY_SHARD_STREAM, ReplayShard  # noqa: F401 (re-exported)


@dataclass
class ApeXConfig(DQNConfig, AsyncReplayConfig):
    """Ape-X's options (plus DQN's and the async replay pattern's). `num_workers` is the number of actors; replay is
    always prioritized."""

    #: Actors (rollout workers), each hosting num_envs_per_worker envs.
    num_workers: int = 2
    #: Env steps per iteration over all envs: each actor task samples train_batch_size / (total envs) steps of its envs.
    train_batch_size: int = 64
    #: Rows each shard holds.
    replay_buffer_capacity: int = 50_000
    #: Base epsilon of the per-env schedule eps_i = eps ** (1 + alpha * i / (N - 1)).
    apex_epsilon: float = 0.4
    #: Exponent spread alpha of that schedule.
    apex_epsilon_alpha: float = 7.0

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.apex_epsilon <= 1.0:
            raise UnirlError(f"config key `apex_epsilon` must lie in [0, 1], got {self.apex_epsilon}.")


def apex_epsilons(num_envs: int, eps: float, alpha: float) -> np.ndarray:
    """eps_i = eps ** (1 + alpha * i / (N - 1)) for global env index i of N (eps itself when N is 1)."""
    if num_envs == 1:
        return np.array([eps], np.float64)
    i = np.arange(num_envs, dtype=np.float64)
    return eps ** (1.0 + alpha * i / (num_envs - 1))


def initial_priorities(q: np.ndarray, q_next: np.ndarray, rows: dict, eps: float) -> np.ndarray:
    """|TD error| + eps of the rows from the actor's own network (it stands in for the target network too)."""
    q = q.astype(np.float64)
    q_next = q_next.astype(np.float64)
    target = rows[sb.REWARDS] + rows[DISCOUNTS] * (1.0 - rows[sb.TERMINATEDS]) * q_next.max(axis=-1)
    td = q[np.arange(len(q)), rows[sb.ACTIONS]] - target
    return np.abs(td) + eps


def actor_epsilons(config, spec) -> dict:
    """An actor's envs' epsilons, from their global indices (so a replaced actor explores as the one it replaces)."""
    eps = apex_epsilons(config.num_envs, config.apex_epsilon, config.apex_epsilon_alpha)
    return {"epsilon": eps[spec.env_start:spec.env_start + spec.num_envs]}


def actor_rows(batch, config) -> dict:
    return n_step_rows(batch, config.gamma, config.n_step)


def actor_priorities(policy, rows, config) -> np.ndarray:
    n = len(rows[sb.OBS])
    q = policy.forward(np.concatenate([rows[sb.OBS], rows[NEXT_OBS]]))["q"]
    return initial_priorities(q[:n], q[n:], rows, config.prioritized_replay_eps)


class ApeX(DQN):
    name = "APEX"
    config_class = ApeXConfig
    supports_normalization = False
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "train_batch_size": 48, "learning_starts": 0, "actor_batches_per_iteration": 2,
                    "replay_batch_size": 32, "training_intensity": 0.25, "target_network_update_freq": 96,
                    "num_replay_shards": 2, "weight_sync_period": 4,
                    "model": {"hidden_sizes": [32, 32], "activation": "relu"}},
        learning={"config": {"env": "CartPole-v1", "num_workers": 4, "num_envs_per_worker": 2,
                             "min_training_intensity": 0.5}, "score": 475.0,
                  "budget": 100_000, "eval_episodes": 20},
        # Asynchronous: levels 2 and 3 replay the free-running reference run's recorded schedule.
        reproducibility=REPLAYABLE,
    )
    execution = loops.AsyncReplay(exploration=actor_epsilons, rows=actor_rows, priorities=actor_priorities)
    #: DQN's keys Ape-X accepts and does not use (the conformance suite's config-keys check reads this).
    inert_config_keys = {
        "exploration_initial_eps": "Ape-X's actors explore with fixed per-env epsilons (apex_epsilon, apex_epsilon_alpha)",
        "exploration_final_eps": "Ape-X's actors explore with fixed per-env epsilons (apex_epsilon, apex_epsilon_alpha)",
        "exploration_timesteps": "Ape-X's actors explore with fixed per-env epsilons (apex_epsilon, apex_epsilon_alpha)",
        "prioritized_replay": "Ape-X's replay is always prioritized",
        "min_training_intensity": "read only where actors run in other processes (in-process, the learner steps whenever allowed)",
    }

    def exploration(self, worker_id: int | None = None) -> dict:
        return {}  # each actor's per-env epsilons are its own (ApeXActor)
