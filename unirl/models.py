"""Neutral modules: parameters as named NumPy arrays initialised from the seed, forward passes written on ops.

A module is what RLlib calls an RLModule, kept small. It holds its action distribution
(`module.dist`), its parameter layout, and two forward passes:

- `forward_inference(ops, params, obs)`: what acting needs (logits, Gaussian means, Q-values);
  the distribution turns it into actions in NumPy (sampled, epsilon-greedy or greedy).
- `forward_train(ops, params, obs)`: a dict of named outputs a loss or postprocessor uses
  (`dist_inputs`, `values`, `q`).

Which module an algorithm uses is its `module_kind` ("actor_critic", "q", "policy"); the torso
and the distribution are chosen from the observation and action spaces (`build_module`), and
`model` in the config overrides the defaults. A module's parameters travel as one flat float32
vector; `ParamLayout` maps between that vector and the named arrays checkpoints store.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unirl import seeding
from unirl.errors import UnirlError, did_you_mean

ACTIVATIONS = ("tanh", "relu")


class ParamLayout:
    """Names, shapes and offsets of a module's parameters inside one flat vector."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.names = list(shapes)
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        self.slices = {}
        offset = 0
        for name in self.names:
            size = int(np.prod(self.shapes[name], dtype=np.int64))
            self.slices[name] = (offset, offset + size)
            offset += size
        self.size = offset

    def flatten(self, params: dict[str, np.ndarray]) -> np.ndarray:
        missing = set(self.names) - set(params)
        extra = set(params) - set(self.names)
        if missing or extra:
            raise UnirlError(
                f"weights do not fit this model: missing {sorted(missing)}, unexpected {sorted(extra)}."
            )
        for name in self.names:
            if tuple(np.shape(params[name])) != self.shapes[name]:
                raise UnirlError(
                    f"weight `{name}` has shape {tuple(np.shape(params[name]))}, the model expects {self.shapes[name]}."
                )
        if not self.names:
            return np.zeros(0, np.float32)
        return np.concatenate([np.asarray(params[n], np.float32).ravel() for n in self.names])

    def unflatten_numpy(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        return {n: np.array(flat[a:b]).reshape(self.shapes[n]) for n, (a, b) in self.slices.items()}

    def unflatten(self, ops, flat):
        """Named tensors viewed from a flat tensor (any framework's ops)."""
        pieces = ops.split(flat, [b - a for a, b in self.slices.values()])
        return {n: ops.reshape(p, self.shapes[n]) for n, p in zip(self.names, pieces)}


def orthogonal(rng: np.random.Generator, shape: tuple[int, int], gain: float) -> np.ndarray:
    """Orthogonal init (Saxe et al.) computed in float64 NumPy, returned as float32."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q[:rows, :cols]).astype(np.float32)


@dataclass
class ModelConfig:
    """The neutral model: MLP towers and the heads an algorithm asks for (config key `model`)."""

    #: Hidden layer sizes of each MLP tower ([] gives a linear policy, as ARS uses).
    hidden_sizes: Sequence[int] = (64, 64)
    #: Hidden activation: "tanh" or "relu".
    activation: str = "tanh"
    #: Actor-critic: share the hidden layers between policy and value heads.
    vf_share_layers: bool = False
    #: Q head: dueling architecture (Wang et al. 2016), value and advantage streams.
    dueling: bool = False
    #: Gain of the orthogonal init of the policy output layer (small: near-uniform initial actions).
    pi_out_gain: float = 0.01
    #: Initial log standard deviation of a diagonal Gaussian (Box actions on actor-critic modules).
    log_std_init: float = 0.0
    #: A module of your own: "pkg.module:factory", called as factory(obs_space, action_space, model_config, kind).
    custom_module: str = ""

    def validate(self, allow_linear: bool = False) -> None:
        if self.activation not in ACTIVATIONS:
            raise UnirlError(
                f"model activation `{self.activation}` is unknown; choose one of {list(ACTIVATIONS)}."
                + did_you_mean(self.activation, ACTIVATIONS)
            )
        if (not self.hidden_sizes and not allow_linear) or any(int(h) <= 0 for h in self.hidden_sizes):
            raise UnirlError(f"model hidden_sizes must be positive integers, got {list(self.hidden_sizes)}.")


def mlp_shapes(prefix: str, sizes: list[int]) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of an MLP tower `prefix/i/{w,b}` through the layer sizes."""
    shapes = {}
    for i in range(len(sizes) - 1):
        shapes[f"{prefix}/{i}/w"] = (sizes[i], sizes[i + 1])
        shapes[f"{prefix}/{i}/b"] = (sizes[i + 1],)
    return shapes


class Module:
    """Base module: a layout, an init from the seed, and the two forward passes.

    Subclasses fill `shapes` and `gains` (orthogonal-init gain per weight name; biases start at 0).
    """

    kind = "base"

    def __init__(self, obs_dim: int, dist, config: ModelConfig, shapes: dict, gains: dict):
        self.obs_dim = int(obs_dim)
        self.dist = dist
        self.config = config
        self.hidden = [int(h) for h in config.hidden_sizes]
        self.layout = ParamLayout(shapes)
        self.gains = gains

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Initial parameters from the seed: orthogonal weights (gain per layer), zero biases."""
        rng = seeding.generator(seed, seeding.MODEL_INIT)
        params = {}
        for name in self.layout.names:
            shape = self.layout.shapes[name]
            if name.endswith("/b") or len(shape) != 2:
                params[name] = np.zeros(shape, np.float32)  # biases; a distribution's own parameters are set below
            else:
                params[name] = orthogonal(rng, shape, self.gains.get(name, np.sqrt(2.0)))
        return params

    def _act(self, ops):
        return ops.tanh if self.config.activation == "tanh" else ops.relu

    def tower(self, ops, params, prefix: str, x):
        act = self._act(ops)
        for i in range(len(self.hidden)):
            x = act(ops.matmul(x, params[f"{prefix}/{i}/w"]) + params[f"{prefix}/{i}/b"])
        return x

    @staticmethod
    def dense(ops, params, prefix: str, x):
        return ops.matmul(x, params[f"{prefix}/w"]) + params[f"{prefix}/b"]

    def forward_inference(self, ops, params, obs):
        raise NotImplementedError

    def forward_train(self, ops, params, obs) -> dict:
        raise NotImplementedError


class ActorCritic(Module):
    """A policy head (distribution inputs) and a value head, each on its MLP tower (or one shared)."""

    kind = "actor_critic"

    def __init__(self, obs_dim: int, dist, config: ModelConfig):
        config.validate()
        hidden = [int(h) for h in config.hidden_sizes]
        shapes: dict[str, tuple[int, ...]] = {}
        for tower in (["shared"] if config.vf_share_layers else ["pi", "vf"]):
            shapes.update(mlp_shapes(tower, [int(obs_dim)] + hidden))
        shapes.update({"pi/out/w": (hidden[-1], dist.num_outputs), "pi/out/b": (dist.num_outputs,),
                       "vf/out/w": (hidden[-1], 1), "vf/out/b": (1,)})
        shapes.update(dist.extra_param_shapes())
        super().__init__(obs_dim, dist, config, shapes, {"pi/out/w": config.pi_out_gain, "vf/out/w": 1.0})

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        params = super().init_params(seed)
        params.update(self.dist.extra_param_init())
        return params

    def _towers(self):
        return ("shared", "shared") if self.config.vf_share_layers else ("pi", "vf")

    def forward_inference(self, ops, params, obs):
        h = self.tower(ops, params, self._towers()[0], obs)
        return self.dist.inputs(ops, params, self.dense(ops, params, "pi/out", h))

    def value(self, ops, params, obs):
        h = self.tower(ops, params, self._towers()[1], obs)
        return ops.reshape(self.dense(ops, params, "vf/out", h), (-1,))

    def forward_train(self, ops, params, obs) -> dict:
        """{"dist_inputs": [B, dist.num_inputs], "values": [B]}."""
        if self.config.vf_share_layers:
            h = self.tower(ops, params, "shared", obs)
            out = self.dist.inputs(ops, params, self.dense(ops, params, "pi/out", h))
            v = ops.reshape(self.dense(ops, params, "vf/out", h), (-1,))
            return {"dist_inputs": out, "values": v}
        return {"dist_inputs": self.forward_inference(ops, params, obs), "values": self.value(ops, params, obs)}


class QNetwork(Module):
    """Q-values for each of `n` actions on an MLP tower; dueling (value + centred advantage) optional."""

    kind = "q"

    def __init__(self, obs_dim: int, dist, config: ModelConfig):
        config.validate()
        hidden = [int(h) for h in config.hidden_sizes]
        n = dist.num_inputs
        shapes = mlp_shapes("q", [int(obs_dim)] + hidden)
        if config.dueling:
            shapes.update({"adv/out/w": (hidden[-1], n), "adv/out/b": (n,),
                           "value/out/w": (hidden[-1], 1), "value/out/b": (1,)})
            gains = {"adv/out/w": 1.0, "value/out/w": 1.0}
        else:
            shapes.update({"q/out/w": (hidden[-1], n), "q/out/b": (n,)})
            gains = {"q/out/w": 1.0}
        super().__init__(obs_dim, dist, config, shapes, gains)

    def forward_inference(self, ops, params, obs):
        h = self.tower(ops, params, "q", obs)
        if not self.config.dueling:
            return self.dense(ops, params, "q/out", h)
        adv = self.dense(ops, params, "adv/out", h)
        value = self.dense(ops, params, "value/out", h)
        centred = adv - ops.reshape(ops.mean(adv, axis=-1), (-1, 1))
        return value + centred

    def forward_train(self, ops, params, obs) -> dict:
        """{"q": [B, n]}."""
        return {"q": self.forward_inference(ops, params, obs)}


class PolicyNetwork(Module):
    """A policy head only (no value): what evolution strategies and ARS perturb. No hidden layer: linear."""

    kind = "policy"

    def __init__(self, obs_dim: int, dist, config: ModelConfig):
        config.validate(allow_linear=True)
        hidden = [int(h) for h in config.hidden_sizes]
        shapes = mlp_shapes("pi", [int(obs_dim)] + hidden)
        last = hidden[-1] if hidden else int(obs_dim)
        shapes.update({"pi/out/w": (last, dist.num_outputs), "pi/out/b": (dist.num_outputs,)})
        shapes.update(dist.extra_param_shapes())
        super().__init__(obs_dim, dist, config, shapes, {"pi/out/w": config.pi_out_gain})

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        params = super().init_params(seed)
        params.update(self.dist.extra_param_init())
        return params

    def forward_inference(self, ops, params, obs):
        h = self.tower(ops, params, "pi", obs)
        return self.dist.inputs(ops, params, self.dense(ops, params, "pi/out", h))

    def forward_train(self, ops, params, obs) -> dict:
        return {"dist_inputs": self.forward_inference(ops, params, obs)}


MODULE_KINDS = {"actor_critic": ActorCritic, "q": QNetwork, "policy": PolicyNetwork}


def build_module(kind: str, obs_space, action_space, config: ModelConfig) -> Module:
    """The module of `kind` for these spaces: torso from the observation space, head and
    distribution from the action space (a `custom_module` factory in the config replaces it)."""
    from unirl.distributions import for_action_space

    if config.custom_module:
        from unirl.loading import import_attr

        factory = import_attr(config.custom_module, "custom module", config.custom_module)
        return factory(obs_space, action_space, config, kind)
    if kind not in MODULE_KINDS:
        raise UnirlError(f"unknown module kind `{kind}`; unirl has {sorted(MODULE_KINDS)}."
                         + did_you_mean(kind, MODULE_KINDS))
    if len(obs_space.shape or ()) != 1:
        raise UnirlError(f"observation space {obs_space} is not supported yet; unirl's MLP takes flat Box observations.")
    return MODULE_KINDS[kind](obs_space.shape[0], for_action_space(action_space, kind, config.log_std_init), config)
