"""Sync replay (DQN): broadcast weights, every worker samples, the driver adds the joined batch to a replay buffer, the learner replays.

The joined batch is in global env order (SampleBatch.concat_envs), the algorithm's
`postprocess` turns it into rows (n-step transitions, say) on the driver, and the rows enter
the buffer in that order: the buffer's contents, and so every replayed minibatch drawn with the
learner's generator, are the same whatever the backend and the split of envs over workers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from unirl.execution.recovery import WorkerGroup
from unirl.replay import ReplayBuffer
from unirl.rollout import RolloutWorker, WorkerSpec
from unirl.sample_batch import SampleBatch


class SyncReplay:
    """sample(weights, **explore): gather a batch in env order and store its rows; replay(n, rng, beta): a minibatch."""

    def __init__(self, backend, specs: list[WorkerSpec], buffer: ReplayBuffer,
                 postprocess: Callable[[SampleBatch], dict], worker_cls=RolloutWorker, group=None):
        self.backend = backend
        self.buffer = buffer
        self.postprocess = postprocess
        # Failed workers are replaced and their sampling redone from their state at the start of the
        # iteration (unirl.execution.recovery): a faulted run's buffer, and weights, are the unfaulted run's.
        self.group = group if group is not None else WorkerGroup(backend, worker_cls, [(s,) for s in specs])
        self.specs = list(specs)

    @property
    def workers(self):
        return self.group.handles

    def sample(self, flat_weights: np.ndarray, **explore) -> SampleBatch:
        """Every worker samples with `flat_weights` and `explore` (e.g. epsilon); the rows go into the buffer."""
        batch = SampleBatch.concat_envs(self.group.call_all("sample", flat_weights, **explore))
        self.buffer.add(self.postprocess(batch))
        return batch

    def replay(self, n: int, rng: np.random.Generator, beta: float = 0.0):
        """(rows, buffer indices, importance weights) of a minibatch of n rows."""
        return self.buffer.sample(n, rng, beta)

    def update_priorities(self, idx: np.ndarray, td_errors: np.ndarray) -> None:
        self.buffer.update_priorities(idx, td_errors)

    # -- worker state in global env order (checkpoints, exact resume; see unirl.execution.recovery) --
    def get_worker_states(self) -> list:
        return self.group.get_states()

    def set_worker_states(self, states: list) -> None:
        self.group.set_states(states, ranges=[s.env_indices for s in self.specs])
