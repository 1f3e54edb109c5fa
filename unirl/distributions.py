"""Action distributions: log-probabilities and entropy written on ops; action selection in NumPy from per-env noise.

Actions are drawn in NumPy from each env's own noise stream (`noise_per_step` uniforms per env
and step, see seeding.EnvNoise), so given the same module outputs every framework and backend
picks the same action. A distribution also says which extra parameters it owns (a Gaussian's
log-std) and how the module's raw head output becomes its inputs.

    noise [N, noise_per_step] in [0, 1)  ->  dist.sample_numpy(inputs, noise, **explore) -> actions [N, ...]
"""
from __future__ import annotations

import numpy as np

import gymnasium as gym

from unirl.errors import UnirlError


class Distribution:
    """Base: a distribution whose inputs are the module's head output, with no parameters of its own."""

    num_inputs: int
    action_dtype = np.int64
    action_shape: tuple[int, ...] = ()
    #: Uniforms each env draws per step for exploration.
    noise_per_step = 1

    def extra_param_shapes(self) -> dict:
        return {}

    def extra_param_init(self) -> dict:
        return {}

    def inputs(self, ops, params, head_out):
        """The distribution's inputs from the head's output (identity unless it owns parameters)."""
        return head_out

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, **explore) -> np.ndarray:
        raise NotImplementedError

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Categorical(Distribution):
    """A categorical distribution over `n` actions, parameterised by logits."""

    def __init__(self, n: int):
        self.n = int(n)
        self.num_inputs = self.n

    def logp(self, ops, inputs, actions):
        return ops.take_along_last(ops.log_softmax(inputs), actions)

    def entropy(self, ops, inputs):
        logp = ops.log_softmax(inputs)
        return -ops.sum(ops.exp(logp) * logp, axis=-1)

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, **explore) -> np.ndarray:
        """Inverse-CDF sampling: the action whose CDF interval holds the env's uniform."""
        x = inputs.astype(np.float64)
        x = x - x.max(axis=-1, keepdims=True)
        p = np.exp(x)
        cdf = np.cumsum(p, axis=-1)
        u = noise[:, 0][:, None] * cdf[:, -1:]
        return np.minimum((cdf[:, :-1] <= u).sum(axis=-1), self.n - 1).astype(np.int64)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        return np.argmax(inputs, axis=-1).astype(np.int64)


class EpsilonGreedy(Distribution):
    """Q-values in, epsilon-greedy actions out: with probability `epsilon` a uniformly random action.

    Two uniforms per env and step: the first decides whether to explore, the second picks the
    random action, so the choice depends only on the env's stream, never on the backend.
    """

    noise_per_step = 2

    def __init__(self, n: int):
        self.n = int(n)
        self.num_inputs = self.n

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, epsilon: float = 0.0, **explore) -> np.ndarray:
        greedy = self.greedy_numpy(inputs)
        random = np.minimum((noise[:, 1] * self.n).astype(np.int64), self.n - 1)
        return np.where(noise[:, 0] < epsilon, random, greedy)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        return np.argmax(inputs, axis=-1).astype(np.int64)


class Deterministic(Distribution):
    """A deterministic continuous action: the head's outputs clipped to the Box bounds (ES, ARS's policies).

    No randomness: sampling is the greedy action (exploration happens in parameter space)."""

    action_dtype = np.float32

    def __init__(self, low, high):
        self.low = np.asarray(low, np.float32)
        self.high = np.asarray(high, np.float32)
        self.action_shape = tuple(self.low.shape)
        self.num_inputs = int(np.prod(self.action_shape, dtype=np.int64))

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, **explore) -> np.ndarray:
        return self.greedy_numpy(inputs)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs, np.float32).reshape((-1,) + self.action_shape)
        return np.clip(x, self.low, self.high)


def for_action_space(space: gym.Space, kind: str = "actor_critic") -> Distribution:
    """The distribution for a Gymnasium action space and a module kind ("q" modules act epsilon-greedily)."""
    if isinstance(space, gym.spaces.Discrete):
        return EpsilonGreedy(space.n) if kind == "q" else Categorical(space.n)
    if isinstance(space, gym.spaces.Box) and kind == "policy":
        return Deterministic(space.low, space.high)
    raise UnirlError(
        f"action space {space} is not supported yet for a `{kind}` module; unirl handles Discrete action spaces."
    )
