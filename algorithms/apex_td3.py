"""Ape-X TD3 (Horgan et al. 2018's Ape-X DPG, RLlib's APEX_DDPG, with TD3's losses): TD3 on the "async replay" pattern.

Actors act with TD3's Gaussian exploration noise and give their n-step rows initial priorities from their own
critic's |TD error|; the learner pulls prioritized minibatches from the replay shards and learns with TD3's
losses, delayed actor updates and Polyak targets. Replayable like Ape-X DQN (its recorded arrival schedule).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unirl import sample_batch as sb
from unirl.algorithms.apex import actor_rows
from unirl.algorithms.sac import NEXT_NOISE
from unirl.algorithms.td3 import TD3, TD3Config, td3_target
from unirl.config import AsyncReplayConfig
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec
from unirl.execution import loops


@dataclass
class ApeXTD3Config(TD3Config, AsyncReplayConfig):
    """TD3's options and the async replay pattern's; replay is always prioritized. `num_workers` is the number of actors."""

    num_workers: int = 2
    num_envs_per_worker: int = 2
    train_batch_size: int = 64


def actor_noise(config, spec) -> dict:
    return {"random": 0.0, "noise_scale": config.exploration_noise}


def td_errors(ops, module, params, batch):
    """Q1(s, a) - y with the actor's own weights standing in for the targets (no smoothing)."""
    hp = {"target_noise": 0.0, "target_noise_clip": 0.0, "twin_q": 1.0}
    return module.q(ops, params, "q1", batch[sb.OBS], batch[sb.ACTIONS]) - td3_target(ops, module, params, batch, hp)


def actor_priorities(policy, rows, config) -> np.ndarray:
    noise = np.zeros((len(rows[sb.OBS]), policy.dist.dim), np.float32)
    return np.abs(policy.call(td_errors, dict(rows, **{NEXT_NOISE: noise})).astype(np.float64)) + config.prioritized_replay_eps


class ApeXTD3(TD3):
    name = "APEX_TD3"
    config_class = ApeXTD3Config
    supports_normalization = False
    execution = loops.AsyncReplay(exploration=actor_noise, rows=actor_rows, priorities=actor_priorities)
    conformance = ConformanceSpec(
        run_config={"env": "Pendulum-v1", "total_envs": 12, "train_batch_size": 48, "learning_starts": 48,
                    "actor_batches_per_iteration": 2, "replay_batch_size": 32, "training_intensity": 0.25,
                    "num_replay_shards": 2, "weight_sync_period": 4,
                    "model": {"hidden_sizes": [32, 32], "activation": "relu"}},
        learning={"config": {"env": "Pendulum-v1", "model": {"hidden_sizes": [64, 64], "activation": "relu"}},
                  "score": -200.0, "budget": 40_000, "eval_episodes": 10, "eval_every": 2000},
        reproducibility=REPLAYABLE,
    )
    inert_config_keys = {
        "prioritized_replay": "Ape-X's replay is always prioritized",
        "min_training_intensity": "read only where actors run in other processes (in-process, the learner steps whenever allowed)",
    }
