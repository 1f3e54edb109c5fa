"""Execution patterns (the seed's "policy optimizers"), each written once against the Backend protocol.

An algorithm picks one; the pattern owns the workers and the data flow, the algorithm owns the
math. Patterns here:

- `SyncSamples` (PPO, A2C): broadcast the weights, every worker samples, the batches are joined
  in global env order. Bit-identical across backends and worker counts.

The family modules add theirs beside it (sync replay, async gradients, async samples,
population evaluation), all against the same protocol:
`spawn(worker_cls, args) -> handles`, `call(handle, method, ...) -> future`,
`wait(futures, k, timeout)`, `get(futures)` (in the order asked), `shutdown()`.
"""
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
