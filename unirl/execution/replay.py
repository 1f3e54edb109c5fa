"""Sync replay (DQN): broadcast weights, every worker samples, the driver adds the joined batch to a replay buffer, the learner replays.

The joined batch is in global env order (SampleBatch.concat_envs), the algorithm's
`postprocess` turns it into rows (n-step transitions, say) on the driver, and the rows enter
the buffer in that order: the buffer's contents, and so every replayed minibatch drawn with the
learner's generator, are the same whatever the backend and the split of envs over workers.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from unirl.replay import ReplayBuffer
from unirl.rollout import RolloutWorker, WorkerSpec
from unirl.sample_batch import SampleBatch


class SyncReplay:
    """sample(weights, **explore): gather a batch in env order and store its rows; replay(n, rng, beta): a minibatch."""

    def __init__(self, backend, specs: list[WorkerSpec], buffer: ReplayBuffer,
                 postprocess: Callable[[SampleBatch], dict], worker_cls=RolloutWorker):
        self.backend = backend
        self.buffer = buffer
        self.postprocess = postprocess
        self.workers = backend.spawn(worker_cls, [(s,) for s in specs])
        self.specs = list(specs)

    def sample(self, flat_weights: np.ndarray, **explore) -> SampleBatch:
        """Every worker samples with `flat_weights` and `explore` (e.g. epsilon); the rows go into the buffer."""
        futures = [self.backend.call(w, "sample", flat_weights, **explore) for w in self.workers]
        batch = SampleBatch.concat_envs(self.backend.get(futures))
        self.buffer.add(self.postprocess(batch))
        return batch

    def replay(self, n: int, rng: np.random.Generator, beta: float = 0.0):
        """(rows, buffer indices, importance weights) of a minibatch of n rows."""
        return self.buffer.sample(n, rng, beta)

    def update_priorities(self, idx: np.ndarray, td_errors: np.ndarray) -> None:
        self.buffer.update_priorities(idx, td_errors)

    # -- worker state in global env order (checkpoints, exact resume; see unirl.execution.recovery) --
    def get_worker_states(self) -> list:
        return [e for s in self.backend.get([self.backend.call(w, "get_state") for w in self.workers]) for e in s]

    def set_worker_states(self, states: list) -> None:
        by_index = {e["env_index"]: e for e in states}
        self.backend.get([self.backend.call(w, "set_state", [by_index[g] for g in s.env_indices])
                          for w, s in zip(self.workers, self.specs)])
