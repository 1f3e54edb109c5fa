"""Execution patterns written once against the Backend protocol. Sync samples: broadcast weights, gather in env order."""
from __future__ import annotations

import numpy as np

from unirl.rollout import RolloutWorker, WorkerSpec
from unirl.sample_batch import SampleBatch


def worker_specs(algo: str, config) -> list[WorkerSpec]:
    """One spec per worker; worker i hosts the global envs [i * k, (i + 1) * k)."""
    k = config.num_envs_per_worker
    return [WorkerSpec(algo, config.to_dict(), i, i * k, k, config.rollout_length)
            for i in range(config.num_workers)]


class SyncSamples:
    """Every iteration: send the weights to all workers, sample, and join the batches in env order."""

    def __init__(self, backend, specs: list[WorkerSpec], worker_cls=RolloutWorker):
        self.backend = backend
        self.workers = backend.spawn(worker_cls, [(s,) for s in specs])

    def sample(self, flat_weights: np.ndarray) -> SampleBatch:
        futures = [self.backend.call(w, "sample", flat_weights) for w in self.workers]
        return SampleBatch.concat_envs(self.backend.get(futures))
