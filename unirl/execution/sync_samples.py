"""Sync samples (PPO, A2C): broadcast weights, every worker samples, batches joined in global env order.

Failed workers are replaced and their sampling redone with the state they had at the start of
the iteration (`unirl.execution.recovery`), so a faulted iteration gives the same batch as an
unfaulted one.
"""
from __future__ import annotations

import numpy as np

from unirl.execution.recovery import WorkerGroup
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

    def __init__(self, backend, specs: list[WorkerSpec], worker_cls=RolloutWorker, group=None):
        self.backend = backend
        self.specs = list(specs)
        #: The workers (a WorkerGroup), or what stands in for them (`group`: a multi-agent run's per-policy feed).
        self.group = group if group is not None else WorkerGroup(backend, worker_cls, [(s,) for s in specs])

    @property
    def workers(self):
        return self.group.handles

    def sample(self, flat_weights: np.ndarray, **explore) -> SampleBatch:
        return SampleBatch.concat_envs(self.group.call_all("sample", flat_weights, **explore))

    # -- worker state in global env order (checkpoints, exact resume) -------------------------------
    def get_worker_states(self) -> list:
        return self.group.get_states()

    def set_worker_states(self, states: list) -> None:
        self.group.set_states(states, ranges=[s.env_indices for s in self.specs])
