"""Running mean and standard deviation of observations (or anything else), merged exactly and in a fixed order.

`RunningMeanStd` keeps (count, mean, M2) in float64 and combines two summaries with Chan et
al.'s parallel formula, so statistics gathered in many processes can be merged; merging the
same summaries in the same order gives the same bits wherever they were computed. `MeanStdFilter`
normalises with it: (x - mean) / std, clipped. Algorithms that keep a filter broadcast its
`snapshot()` to their workers, which normalise with that frozen copy and send back summaries
of the raw values they saw; the driver merges those in a fixed order (e.g. by global index),
never in arrival order.

    f = MeanStdFilter(shape=(4,))
    f.update(batch_of_obs)                       # or f.merge(RunningMeanStd.from_batch(x))
    y = f(obs)                                   # normalised float32
    arrays = f.get_state(); f.set_state(arrays)  # checkpoints
"""
from __future__ import annotations

import numpy as np


class RunningMeanStd:
    """count, mean and M2 (sum of squared deviations) of the rows seen, in float64."""

    def __init__(self, shape: tuple = ()):
        self.shape = tuple(shape)
        self.count = 0.0
        self.mean = np.zeros(self.shape, np.float64)
        self.m2 = np.zeros(self.shape, np.float64)

    @classmethod
    def from_batch(cls, x: np.ndarray) -> "RunningMeanStd":
        """The summary of the rows of `x` (shape [n, *shape])."""
        x = np.asarray(x, np.float64)
        rs = cls(x.shape[1:])
        rs.count = float(len(x))
        if len(x):
            rs.mean = x.mean(axis=0)
            rs.m2 = np.square(x - rs.mean).sum(axis=0)
        return rs

    @classmethod
    def combine(cls, counts: np.ndarray, means: np.ndarray, m2s: np.ndarray) -> "RunningMeanStd":
        """One summary of k summaries given as arrays ([k], [k, *shape], [k, *shape]), in their row order."""
        counts = np.asarray(counts, np.float64)
        means = np.asarray(means, np.float64)
        rs = cls(means.shape[1:])
        total = float(counts.sum())
        if total == 0:
            return rs
        w = counts.reshape((-1,) + (1,) * (means.ndim - 1))
        rs.count = total
        rs.mean = (w * means).sum(axis=0) / total
        rs.m2 = np.asarray(m2s, np.float64).sum(axis=0) + (w * np.square(means - rs.mean)).sum(axis=0)
        return rs

    def merge(self, other: "RunningMeanStd") -> None:
        """Add another summary (Chan et al. 1979): as if its rows had been pushed here."""
        if other.count == 0:
            return
        if self.count == 0:
            self.count, self.mean, self.m2 = other.count, other.mean.copy(), other.m2.copy()
            return
        n = self.count + other.count
        delta = other.mean - self.mean
        self.mean = self.mean + delta * (other.count / n)
        self.m2 = self.m2 + other.m2 + np.square(delta) * (self.count * other.count / n)
        self.count = n

    def update(self, x: np.ndarray) -> None:
        self.merge(RunningMeanStd.from_batch(x))

    @property
    def var(self) -> np.ndarray:
        return self.m2 / self.count if self.count > 0 else np.ones(self.shape, np.float64)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def copy(self) -> "RunningMeanStd":
        rs = RunningMeanStd(self.shape)
        rs.count, rs.mean, rs.m2 = self.count, self.mean.copy(), self.m2.copy()
        return rs

    def get_state(self) -> dict[str, np.ndarray]:
        return {"count": np.asarray(self.count, np.float64), "mean": self.mean.copy(), "m2": self.m2.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.count = float(state["count"])
        self.mean = np.array(state["mean"], np.float64).reshape(self.shape)
        self.m2 = np.array(state["m2"], np.float64).reshape(self.shape)


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray, clip: float = 0.0) -> np.ndarray:
    """(x - mean) / std in float64, clipped to [-clip, clip] if clip > 0, as float32."""
    y = (np.asarray(x, np.float64) - mean) / std
    if clip > 0:
        y = np.clip(y, -clip, clip)
    return y.astype(np.float32)


class MeanStdFilter:
    """Normalises with running statistics: (x - mean) / max(std, min_std), clipped to +-clip (0: no clip).

    Before any data the filter is the identity (mean 0, std 1).
    """

    def __init__(self, shape: tuple, clip: float = 0.0, min_std: float = 1e-8):
        self.shape = tuple(shape)
        self.clip = float(clip)
        self.min_std = float(min_std)
        self.stats = RunningMeanStd(self.shape)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) to normalise with (float64): what workers receive."""
        if self.stats.count == 0:
            return np.zeros(self.shape, np.float64), np.ones(self.shape, np.float64)
        return self.stats.mean.copy(), np.maximum(self.stats.std, self.min_std)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean, std = self.snapshot()
        return normalize(x, mean, std, self.clip)

    def update(self, x: np.ndarray) -> None:
        self.stats.update(x)

    def merge(self, other: RunningMeanStd) -> None:
        self.stats.merge(other)

    def get_state(self) -> dict[str, np.ndarray]:
        return self.stats.get_state()

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.stats.set_state(state)
