"""Sync samples (PPO, A2C): broadcast weights, every worker samples, batches joined in global env order."""
from __future__ import annotations

import numpy as np

from unirl.policy import PolicySpec
from unirl.rollout import RolloutWorker, WorkerSpec
from unirl.sample_batch import SampleBatch


def worker_specs(config, policy: PolicySpec, **options) -> list[WorkerSpec]:
    """One spec per worker; worker i hosts the global envs [i * k, (i + 1) * k)."""
    k = config.num_envs_per_worker
    return [WorkerSpec(policy, config.env, dict(config.env_config), config.seed, i, i * k, k, config.rollout_length,
                       **options)
            for i in range(config.num_workers)]


class SyncSamples:
    """Every call: send the weights to all workers, sample, and join the batches in env order."""

    def __init__(self, backend, specs: list[WorkerSpec], worker_cls=RolloutWorker):
        self.backend = backend
        self.workers = backend.spawn(worker_cls, [(s,) for s in specs])

    def sample(self, flat_weights: np.ndarray, **explore) -> SampleBatch:
        futures = [self.backend.call(w, "sample", flat_weights, **explore) for w in self.workers]
        return SampleBatch.concat_envs(self.backend.get(futures))
