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
    #: The exploration settings sample_numpy takes (EpsilonGreedy: "epsilon"): training rollouts must give
    #: every one, and nothing else (check_exploration); a misspelt or missing one is an error, not greedy actions.
    exploration_options: tuple = ()

    def check_exploration(self, explore: dict, required: bool = True) -> None:
        """Raise a UnirlError for an exploration setting this distribution does not take (with a suggestion)
        or, if `required`, one it takes that is missing."""
        from unirl.errors import did_you_mean

        name = type(self).__name__
        for key in explore:
            if key not in self.exploration_options:
                takes = ", ".join(f"`{k}`" for k in self.exploration_options) or "none"
                raise UnirlError(f"unknown exploration option `{key}` for {name} actions (it takes {takes})."
                                 + did_you_mean(key, self.exploration_options))
        missing = [k for k in self.exploration_options if k not in explore] if required else []
        if missing:
            raise UnirlError(f"{name} actions need the exploration option `{missing[0]}` when sampling for "
                             "training; the algorithm's exploration() must give it.")

    @property
    def num_outputs(self) -> int:
        """Width of the module's head output (`inputs` turns it into `num_inputs` columns)."""
        return self.num_inputs

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

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        """What the env receives for sampled `actions` (a Gaussian's clipped to the Box); the
        batch and the loss keep the actions as sampled."""
        return actions


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

    def kl(self, ops, inputs, other_inputs):
        """KL(self(inputs) || self(other_inputs)) per row."""
        logp = ops.log_softmax(inputs)
        return ops.sum(ops.exp(logp) * (logp - ops.log_softmax(other_inputs)), axis=-1)

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
    exploration_options = ("epsilon",)

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


LOG_2PI = float(np.log(2.0 * np.pi))

# Wichura's AS241 (PPND16): the standard normal quantile to about 1e-16, from +, *, /, log and
# sqrt only (no library call whose last bits vary by version), vectorised in float64.
_AS241_A = (3.387132872796366608, 133.14166789178437745, 1971.5909503065514427, 13731.693765509461125,
            45921.953931549871457, 67265.770927008700853, 33430.575583588128105, 2509.0809287301226727)
_AS241_B = (1.0, 42.313330701600911252, 687.1870074920579083, 5394.1960214247511077,
            21213.794301586595867, 39307.89580009271061, 28729.085735721942674, 5226.495278852545925)
_AS241_C = (1.42343711074968357734, 4.6303378461565452959, 5.7694972214606914055, 3.64784832476320460504,
            1.27045825245236838258, 0.24178072517745061177, 0.0227238449892691845833, 7.7454501427834140764e-4)
_AS241_D = (1.0, 2.05319162663775882187, 1.6763848301838038494, 0.68976733498510000455,
            0.14810397642748007459, 0.0151986665636164571966, 5.475938084995344946e-4, 1.05075007164441684324e-9)
_AS241_E = (6.6579046435011037772, 5.4637849111641143699, 1.7848265399172913358, 0.29656057182850489123,
            0.026532189526576123093, 0.0012426609473880784386, 2.71155556874348757815e-5, 2.01033439929228813265e-7)
_AS241_F = (1.0, 0.59983220655588793769, 0.13692988092273580531, 0.0148753612908506148525,
            7.868691311456132591e-4, 1.8463183175100546818e-5, 1.4215117583164458887e-7, 2.04426310338993978564e-15)


def _poly(coeffs, x):
    out = np.full_like(x, coeffs[-1])
    for c in coeffs[-2::-1]:
        out = out * x + c
    return out


def normal_quantile(u: np.ndarray) -> np.ndarray:
    """Standard normal quantiles of uniforms in [0, 1) (float64; u is moved by 2**-54 into (0, 1), exactly).

    A monotone, exact-arithmetic transform (AS241): one uniform per normal, so an env's k-th
    normal depends only on its k-th uniform, and the same uniforms give the same normals on every
    framework and backend."""
    q = (np.asarray(u, np.float64) - 0.5) + 2.0 ** -54  # exact: u - 0.5 and the shift need 53 bits
    out = np.empty_like(q)
    central = np.abs(q) <= 0.425
    r = 0.180625 - q[central] * q[central]
    out[central] = q[central] * _poly(_AS241_A, r) / _poly(_AS241_B, r)
    tail = ~central
    r = np.sqrt(-np.log(0.5 - np.abs(q[tail])))  # min(p, 1 - p) >= 2**-54
    near = r <= 5.0
    val = np.where(near, _poly(_AS241_C, r - 1.6) / _poly(_AS241_D, r - 1.6),
                   _poly(_AS241_E, r - 5.0) / _poly(_AS241_F, r - 5.0))
    out[tail] = np.where(q[tail] < 0, -val, val)
    return out


class DiagGaussian(Distribution):
    """A diagonal Gaussian over a Box: means from the head, a state-independent log-std the
    distribution owns (parameter `pi/log_std`, trained with the rest).

    Inputs are [B, 2d] (means, then log-stds). Sampling draws d normals per env and step from the
    env's uniforms by the normal quantile (AS241), in float64 NumPy. The sample is what the batch
    and the loss see; the env receives it clipped to the Box (`env_actions`); greedy actions are
    the means, clipped.
    """

    action_dtype = np.float32

    def __init__(self, low, high, log_std_init: float = 0.0):
        self.low = np.asarray(low, np.float32)
        self.high = np.asarray(high, np.float32)
        self.action_shape = tuple(self.low.shape)
        self.dim = int(np.prod(self.action_shape, dtype=np.int64))
        self.num_inputs = 2 * self.dim
        self.noise_per_step = self.dim
        self.log_std_init = float(log_std_init)

    @property
    def num_outputs(self) -> int:
        return self.dim

    def extra_param_shapes(self) -> dict:
        return {"pi/log_std": (self.dim,)}

    def extra_param_init(self) -> dict:
        return {"pi/log_std": np.full((self.dim,), self.log_std_init, np.float32)}

    def inputs(self, ops, params, head_out):
        return ops.concat([head_out, head_out * 0.0 + params["pi/log_std"]], axis=-1)

    def _split(self, inputs):
        return inputs[:, :self.dim], inputs[:, self.dim:]

    def logp(self, ops, inputs, actions):
        mean, log_std = self._split(inputs)
        z = (ops.reshape(actions, (-1, self.dim)) - mean) * ops.exp(-log_std)
        return -0.5 * ops.sum(ops.square(z), axis=-1) - ops.sum(log_std, axis=-1) - 0.5 * self.dim * LOG_2PI

    def entropy(self, ops, inputs):
        _, log_std = self._split(inputs)
        return ops.sum(log_std, axis=-1) + 0.5 * self.dim * (1.0 + LOG_2PI)

    def kl(self, ops, inputs, other_inputs):
        mean, log_std = self._split(inputs)
        mean_q, log_std_q = self._split(other_inputs)
        var_ratio = ops.exp(2.0 * (log_std - log_std_q))
        t = ops.square((mean - mean_q) * ops.exp(-log_std_q))
        return ops.sum(log_std_q - log_std + 0.5 * (var_ratio + t) - 0.5, axis=-1)

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, **explore) -> np.ndarray:
        x = np.asarray(inputs, np.float64)
        mean, log_std = x[:, :self.dim], x[:, self.dim:]
        z = normal_quantile(noise[:, :self.dim])
        return (mean + np.exp(log_std) * z).astype(np.float32).reshape((-1,) + self.action_shape)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        mean = np.asarray(inputs, np.float32)[:, :self.dim].reshape((-1,) + self.action_shape)
        return np.clip(mean, self.low, self.high)

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, self.low, self.high)


def softplus(ops, x):
    """log(1 + exp(x)) without overflow: max(x, 0) + log(1 + exp(-|x|))."""
    return ops.maximum(x, 0.0) + ops.log(1.0 + ops.exp(-ops.abs(x)))


class _BoxTanh(Distribution):
    """Actions in [-1, 1]^d (a tanh range) that the env receives rescaled to its Box, low + (a + 1)(high - low) / 2.

    Exploration option `random` (1.0: each action uniform in [-1, 1] from the env's uniforms, what
    off-policy algorithms do before learning starts)."""

    action_dtype = np.float32

    def __init__(self, low, high):
        self.low = np.asarray(low, np.float32)
        self.high = np.asarray(high, np.float32)
        if not (np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high))):
            raise UnirlError("a tanh-squashed policy needs a bounded Box action space (finite low and high), got "
                             f"low {self.low.tolist()}, high {self.high.tolist()}.")
        self.action_shape = tuple(self.low.shape)
        self.dim = int(np.prod(self.action_shape, dtype=np.int64))
        self.noise_per_step = self.dim

    def env_actions(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, np.float32).reshape((-1,) + self.action_shape)
        return np.clip(self.low + (a + np.float32(1.0)) * np.float32(0.5) * (self.high - self.low), self.low, self.high)

    def _uniform(self, noise: np.ndarray) -> np.ndarray:
        return (2.0 * noise[:, :self.dim] - 1.0).astype(np.float32).reshape((-1,) + self.action_shape)


class SquashedGaussian(_BoxTanh):
    """A tanh-squashed diagonal Gaussian (SAC): inputs [B, 2d], the means and the log-stds (clipped to
    [LOG_STD_MIN, LOG_STD_MAX]) the head outputs; the action is tanh(mean + std z) in [-1, 1]^d.

    Acting draws z from the env's uniforms (normal quantile, float64 NumPy); the learner's loss draws
    its reparameterised samples with `rsample` from normals that come with the minibatch. The
    log-probability corrects the Gaussian's by the tanh's Jacobian in the stable form
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) (Haarnoja et al. 2018, appendix C)."""

    LOG_STD_MIN = -20.0
    LOG_STD_MAX = 2.0
    exploration_options = ("random",)

    def __init__(self, low, high):
        super().__init__(low, high)
        self.num_inputs = 2 * self.dim

    def inputs(self, ops, params, head_out):
        mean, log_std = head_out[:, :self.dim], head_out[:, self.dim:]
        return ops.concat([mean, ops.clip(log_std, self.LOG_STD_MIN, self.LOG_STD_MAX)], axis=-1)

    def rsample(self, ops, inputs, z):
        """(actions tanh(mean + std z), their log-probabilities) for standard normals z [B, d]; differentiable."""
        mean, log_std = inputs[:, :self.dim], inputs[:, self.dim:]
        u = mean + ops.exp(log_std) * z
        gauss = -0.5 * ops.sum(ops.square(z), axis=-1) - ops.sum(log_std, axis=-1) - 0.5 * self.dim * LOG_2PI
        log_det = ops.sum(2.0 * (float(np.log(2.0)) - u - softplus(ops, -2.0 * u)), axis=-1)
        return ops.tanh(u), gauss - log_det

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, random: float = 0.0, **explore) -> np.ndarray:
        if random:
            return self._uniform(noise)
        x = np.asarray(inputs, np.float64)
        u = x[:, :self.dim] + np.exp(x[:, self.dim:]) * normal_quantile(noise[:, :self.dim])
        return np.tanh(u).astype(np.float32).reshape((-1,) + self.action_shape)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        mean = np.tanh(np.asarray(inputs, np.float64)[:, :self.dim]).astype(np.float32)
        return self.env_actions(mean)


class TanhDeterministic(_BoxTanh):
    """A deterministic policy in [-1, 1]^d (TD3, DDPG): inputs [B, d] = tanh(head). Acting adds Gaussian noise of
    standard deviation `noise_scale` (exploration option) from the env's uniforms and clips to [-1, 1]."""

    exploration_options = ("random", "noise_scale")

    def __init__(self, low, high):
        super().__init__(low, high)
        self.num_inputs = self.dim

    def inputs(self, ops, params, head_out):
        return ops.tanh(head_out)

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, random: float = 0.0, noise_scale: float = 0.0,
                     **explore) -> np.ndarray:
        if random:
            return self._uniform(noise)
        x = np.asarray(inputs, np.float64)[:, :self.dim] + noise_scale * normal_quantile(noise[:, :self.dim])
        return np.clip(x, -1.0, 1.0).astype(np.float32).reshape((-1,) + self.action_shape)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        return self.env_actions(np.asarray(inputs, np.float32)[:, :self.dim])


class SoftCategorical(Categorical):
    """A categorical policy (discrete SAC) with the exploration option `random`: uniform actions before learning starts."""

    exploration_options = ("random",)

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, random: float = 0.0, **explore) -> np.ndarray:
        if random:
            return np.minimum((noise[:, 0] * self.n).astype(np.int64), self.n - 1)
        return super().sample_numpy(inputs, noise)


class MultiCategorical(Distribution):
    """Independent categoricals over a MultiDiscrete space: logits concatenated, one uniform per component."""

    def __init__(self, nvec):
        self.nvec = [int(n) for n in np.asarray(nvec).ravel()]
        self.num_inputs = int(sum(self.nvec))
        self.noise_per_step = len(self.nvec)
        self.action_shape = (len(self.nvec),)
        self.offsets = np.concatenate([[0], np.cumsum(self.nvec)]).astype(int).tolist()

    def _logits(self, inputs):
        return [inputs[:, a:b] for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def logp(self, ops, inputs, actions):
        total = 0.0
        for i, logits in enumerate(self._logits(inputs)):
            total = total + ops.take_along_last(ops.log_softmax(logits), actions[:, i])
        return total

    def entropy(self, ops, inputs):
        total = 0.0
        for logits in self._logits(inputs):
            logp = ops.log_softmax(logits)
            total = total - ops.sum(ops.exp(logp) * logp, axis=-1)
        return total

    def kl(self, ops, inputs, other_inputs):
        total = 0.0
        for logits, other in zip(self._logits(inputs), self._logits(other_inputs)):
            logp = ops.log_softmax(logits)
            total = total + ops.sum(ops.exp(logp) * (logp - ops.log_softmax(other)), axis=-1)
        return total

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, **explore) -> np.ndarray:
        x = np.asarray(inputs)
        cols = [Categorical(n).sample_numpy(logits, noise[:, i:i + 1])
                for i, (n, logits) in enumerate(zip(self.nvec, self._logits(x)))]
        return np.stack(cols, axis=-1).astype(np.int64)

    def greedy_numpy(self, inputs: np.ndarray) -> np.ndarray:
        x = np.asarray(inputs)
        return np.stack([np.argmax(l, axis=-1) for l in self._logits(x)], axis=-1).astype(np.int64)


class MaskedEpsilonGreedy(EpsilonGreedy):
    """Epsilon-greedy over masked Q-values (unirl.spaces.MASKED for illegal actions): the greedy action is the
    legal argmax, and the random action is uniform over the legal ones (the second uniform picks among them)."""

    def sample_numpy(self, inputs: np.ndarray, noise: np.ndarray, epsilon: float = 0.0, **explore) -> np.ndarray:
        from unirl.spaces import MASKED

        greedy = self.greedy_numpy(inputs)
        legal = np.asarray(inputs) > MASKED / 2
        count = np.maximum(legal.sum(axis=-1), 1)
        k = np.minimum((noise[:, 1] * count).astype(np.int64), count - 1)
        random = np.argmax(np.cumsum(legal, axis=-1) > k[:, None], axis=-1).astype(np.int64)
        return np.where(noise[:, 0] < epsilon, random, greedy)


def masked(dist: Distribution) -> Distribution:
    """The distribution for a masked head (unirl.models.Masked): Categorical needs nothing more (a masked logit
    has probability 0); epsilon-greedy must draw its random actions among the legal ones."""
    if type(dist) is EpsilonGreedy:
        return MaskedEpsilonGreedy(dist.n)
    return dist


def for_action_space(space: gym.Space, kind: str = "actor_critic", log_std_init: float = 0.0) -> Distribution:
    """The distribution for a Gymnasium action space and a module kind ("q" modules act
    epsilon-greedily, "policy" modules act deterministically on a Box; actor-critic modules
    sample: Categorical, MultiCategorical or a diagonal Gaussian)."""
    if kind == "actor_q":  # off-policy actor-critic (SAC, TD3): squashed Gaussian, or categorical for Discrete
        if isinstance(space, gym.spaces.Discrete):
            return SoftCategorical(space.n)
        if isinstance(space, gym.spaces.Box):
            return SquashedGaussian(space.low, space.high)
    if kind == "deterministic_actor_q" and isinstance(space, gym.spaces.Box):  # TD3, DDPG
        return TanhDeterministic(space.low, space.high)
    if isinstance(space, gym.spaces.Discrete):
        return EpsilonGreedy(space.n) if kind == "q" else Categorical(space.n)
    if isinstance(space, gym.spaces.Box) and kind == "policy":
        return Deterministic(space.low, space.high)
    if isinstance(space, gym.spaces.Box) and kind == "actor_critic":
        return DiagGaussian(space.low, space.high, log_std_init)
    if isinstance(space, gym.spaces.MultiDiscrete) and kind == "actor_critic":
        return MultiCategorical(space.nvec)
    raise UnirlError(
        f"action space {space} is not supported for a `{kind}` module; unirl handles Discrete actions "
        "(every module but the deterministic actor's), Box (actor-critic: diagonal Gaussian; policy: deterministic; "
        "off-policy actor: squashed Gaussian or deterministic tanh) and MultiDiscrete (actor-critic)."
    )
