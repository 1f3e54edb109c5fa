"""Action distributions: log-probabilities and entropy written on ops; sampling in NumPy from per-env noise.

Sampling happens in NumPy so that, given the same logits, every framework and backend picks
the same action from the same uniform.
"""
from __future__ import annotations

import numpy as np

import gymnasium as gym

from unirl.errors import UnirlError


class Categorical:
    """A categorical distribution over `n` actions, parameterised by logits."""

    def __init__(self, n: int):
        self.n = int(n)
        self.num_inputs = self.n
        self.action_dtype = np.int64
        self.action_shape: tuple[int, ...] = ()

    def logp(self, ops, inputs, actions):
        return ops.take_along_last(ops.log_softmax(inputs), actions)

    def entropy(self, ops, inputs):
        logp = ops.log_softmax(inputs)
        return -ops.sum(ops.exp(logp) * logp, axis=-1)

    def kl(self, ops, inputs_old, inputs_new):
        lp_old = ops.log_softmax(inputs_old)
        return ops.sum(ops.exp(lp_old) * (lp_old - ops.log_softmax(inputs_new)), axis=-1)

    def sample_numpy(self, inputs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """Inverse-CDF sampling: the action whose CDF interval holds the env's uniform."""
        x = inputs.astype(np.float64)
        x = x - x.max(axis=-1, keepdims=True)
        p = np.exp(x)
        cdf = np.cumsum(p, axis=-1)
        u = uniforms[:, None] * cdf[:, -1:]
        return np.minimum((cdf[:, :-1] <= u).sum(axis=-1), self.n - 1).astype(np.int64)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        return np.argmax(inputs, axis=-1).astype(np.int64)


def for_action_space(space: gym.Space) -> Categorical:
    """The distribution for a Gymnasium action space."""
    if isinstance(space, gym.spaces.Discrete):
        return Categorical(space.n)
    raise UnirlError(
        f"action space {space} is not supported yet; unirl handles Discrete action spaces."
    )
