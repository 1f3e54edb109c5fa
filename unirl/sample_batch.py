"""SampleBatch: trajectories as NumPy columns with fixed names, time-major [T, N] over N envs.

Batches from several workers are joined along the env axis in global-env-index order, so the
joined batch is the same whatever the split of envs over workers.
"""
from __future__ import annotations

import numpy as np

# Column names (fixed: algorithms, workers and tests agree on them).
OBS = "obs"  # [T, N, *obs_shape] observation the action was taken in
ACTIONS = "actions"  # [T, N, *action_shape]
REWARDS = "rewards"  # [T, N] float32
TERMINATEDS = "terminateds"  # [T, N] bool: the episode ended in a terminal state
TRUNCATEDS = "truncateds"  # [T, N] bool: the episode was cut off (time limit); bootstrap from final obs
BOOTSTRAP_OBS = "bootstrap_obs"  # [N, *obs_shape] observation after the last step
TRUNC_INDEX = "trunc_index"  # [K] int64 flat index t * N + n of truncated steps, ascending
TRUNC_OBS = "trunc_obs"  # [K, *obs_shape] final observation of each truncated episode
EP_RETURNS = "episode_returns"  # [E] returns of episodes completed in this batch
EP_LENGTHS = "episode_lengths"  # [E]
EP_KEYS = "episode_keys"  # [E] int64 (t * N + n): order of completion, for a fixed order
# Columns added by postprocessing
LOGP = "action_logp"
VF_PREDS = "vf_preds"
ADVANTAGES = "advantages"
VALUE_TARGETS = "value_targets"

STEP_COLUMNS = (OBS, ACTIONS, REWARDS, TERMINATEDS, TRUNCATEDS)


class SampleBatch(dict):
    """A dict of NumPy columns (see the names above) with helpers to join and flatten."""

    @property
    def num_steps(self) -> int:
        return int(self[REWARDS].shape[0])

    @property
    def num_envs(self) -> int:
        return int(self[REWARDS].shape[1])

    @property
    def count(self) -> int:
        return self.num_steps * self.num_envs

    @staticmethod
    def concat_envs(parts: list["SampleBatch"]) -> "SampleBatch":
        """Join batches of consecutive env ranges (given in env order) along the env axis."""
        if len(parts) == 1:
            return parts[0]
        T = parts[0].num_steps
        N = sum(p.num_envs for p in parts)
        out = SampleBatch()
        for k in STEP_COLUMNS:
            out[k] = np.concatenate([p[k] for p in parts], axis=1)
        out[BOOTSTRAP_OBS] = np.concatenate([p[BOOTSTRAP_OBS] for p in parts], axis=0)
        for index_key, value_keys in ((TRUNC_INDEX, (TRUNC_OBS,)), (EP_KEYS, (EP_RETURNS, EP_LENGTHS))):
            idx, vals, offset = [], {k: [] for k in value_keys}, 0
            for p in parts:
                t, n = np.divmod(p[index_key], p.num_envs)
                idx.append(t * N + n + offset)
                for k in value_keys:
                    vals[k].append(p[k])
                offset += p.num_envs
            idx = np.concatenate(idx).astype(np.int64)
            order = np.argsort(idx, kind="stable")
            out[index_key] = idx[order]
            for k in value_keys:
                out[k] = np.concatenate(vals[k], axis=0)[order]
        assert out[REWARDS].shape == (T, N)
        return out
