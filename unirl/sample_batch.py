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
TERM_INDEX = "term_index"  # [M] int64 flat index t * N + n of steps that terminated their episode, ascending
TERM_OBS = "term_obs"  # [M, *obs_shape] the terminal observation of each (what a dynamics model learns to predict)
EP_RETURNS = "episode_returns"  # [E] returns of episodes completed in this batch
EP_LENGTHS = "episode_lengths"  # [E]
EP_KEYS = "episode_keys"  # [E] int64 (t * N + n): order of completion, for a fixed order
BEHAVIOUR_INPUTS = "behaviour_dist_inputs"  # [T, N, num_inputs] distribution inputs the actions were drawn from
STATE_IN = "state_in"  # [N, *state] each env's acting (recurrent) state before the first step; after postprocessing
#                        the learner's sequences' states [S, *state]
RESETS = "resets"  # postprocessed sequence rows: 1.0 where an episode starts inside a sequence (the state is zeroed)
# Columns added by postprocessing
LOGP = "action_logp"
VF_PREDS = "vf_preds"
ADVANTAGES = "advantages"
VALUE_TARGETS = "value_targets"

STEP_COLUMNS = (OBS, ACTIONS, REWARDS, TERMINATEDS, TRUNCATEDS)

#: How each column is laid out, which says how batches of consecutive env ranges are joined:
#: "step" columns are [T, N, ...] (joined on axis 1), "env" columns [N, ...] (axis 0), and an
#: "event" column holds one row per event, keyed by the flat index column it names (joined
#: by re-indexing and sorting on that key).
COLUMN_KINDS: dict[str, str] = {
    **{k: "step" for k in STEP_COLUMNS + (BEHAVIOUR_INPUTS,)},
    BOOTSTRAP_OBS: "env", STATE_IN: "env",
    TRUNC_INDEX: "index", TRUNC_OBS: f"event:{TRUNC_INDEX}",
    TERM_INDEX: "index", TERM_OBS: f"event:{TERM_INDEX}",
    EP_KEYS: "index", EP_RETURNS: f"event:{EP_KEYS}", EP_LENGTHS: f"event:{EP_KEYS}",
}


def register_column(name: str, kind: str) -> None:
    """Declare a column of your own: kind "step" ([T, N, ...]), "env" ([N, ...]), "index" (flat
    t * N + n keys) or "event:<index column>" (rows keyed by that index column)."""
    if not (kind in ("step", "env", "index") or kind.startswith("event:")):
        raise ValueError(f"unknown column kind {kind!r}")
    COLUMN_KINDS[name] = kind


#: Columns a learner minibatch keeps beside the loss's own: a recurrent module's sequences (unirl.recurrent).
SEQUENCE_COLUMNS = (STATE_IN, RESETS)


def train_columns(rows: dict, columns) -> dict:
    """The columns of `rows` a loss reads, and the sequence columns where the rows are a recurrent module's sequences."""
    return {k: rows[k] for k in tuple(columns) + SEQUENCE_COLUMNS if k in rows}


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
        """Join batches of consecutive env ranges (given in env order) along the env axis.

        Every column is kept; a column whose layout is not declared (COLUMN_KINDS,
        register_column) is an error rather than silently dropped.
        """
        if len(parts) == 1:
            return parts[0]
        T = parts[0].num_steps
        N = sum(p.num_envs for p in parts)
        keys = list(parts[0])
        for p in parts[1:]:
            if list(p) != keys:
                raise ValueError(f"batches to join have different columns: {sorted(keys)} vs {sorted(p)}")
        unknown = [k for k in keys if k not in COLUMN_KINDS]
        if unknown:
            raise ValueError(f"columns {unknown} have no declared layout; declare them with "
                             "unirl.sample_batch.register_column(name, kind)")
        out = SampleBatch()
        for k in keys:
            kind = COLUMN_KINDS[k]
            if kind == "step":
                out[k] = np.concatenate([p[k] for p in parts], axis=1)
            elif kind == "env":
                out[k] = np.concatenate([p[k] for p in parts], axis=0)
        for index_key in (k for k in keys if COLUMN_KINDS[k] == "index"):
            value_keys = [k for k in keys if COLUMN_KINDS[k] == f"event:{index_key}"]
            idx, offset = [], 0
            for p in parts:
                t, n = np.divmod(p[index_key], p.num_envs)
                idx.append(t * N + n + offset)
                offset += p.num_envs
            idx = np.concatenate(idx).astype(np.int64)
            order = np.argsort(idx, kind="stable")
            out[index_key] = idx[order]
            for k in value_keys:
                out[k] = np.concatenate([p[k] for p in parts], axis=0)[order]
        assert out[REWARDS].shape == (T, N)
        return SampleBatch({k: out[k] for k in keys})
