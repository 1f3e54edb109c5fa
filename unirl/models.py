"""Neutral model specs: parameters as named NumPy arrays, initialised from the seed, forward written on ops.

A model's parameters travel as one flat float32 vector (the optimizer and the wire see one
array); `ParamLayout` maps between that vector and the named arrays that checkpoints store.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from unirl import seeding
from unirl.errors import UnirlError, did_you_mean

ACTIVATIONS = ("tanh", "relu")


class ParamLayout:
    """Names, shapes and offsets of a model's parameters inside one flat vector."""

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
    """The neutral model: one MLP for the policy head and (unless shared) one for the value head."""

    #: Hidden layer sizes of each MLP.
    hidden_sizes: Sequence[int] = (64, 64)
    #: Hidden activation: "tanh" or "relu".
    activation: str = "tanh"
    #: Share the hidden layers between policy and value heads.
    vf_share_layers: bool = False

    def validate(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise UnirlError(
                f"model activation `{self.activation}` is unknown; choose one of {list(ACTIVATIONS)}."
                + did_you_mean(self.activation, ACTIVATIONS)
            )
        if not self.hidden_sizes or any(int(h) <= 0 for h in self.hidden_sizes):
            raise UnirlError(f"model hidden_sizes must be positive integers, got {list(self.hidden_sizes)}.")


class ActorCriticMLP:
    """An MLP policy head (logits or means) and an MLP value head, written once on ops."""

    def __init__(self, obs_dim: int, num_outputs: int, config: ModelConfig, extra_params: dict | None = None):
        config.validate()
        self.obs_dim = int(obs_dim)
        self.num_outputs = int(num_outputs)
        self.config = config
        self.hidden = [int(h) for h in config.hidden_sizes]
        shapes: dict[str, tuple[int, ...]] = {}
        towers = ["shared"] if config.vf_share_layers else ["pi", "vf"]
        for tower in towers:
            sizes = [self.obs_dim] + self.hidden
            for i in range(len(self.hidden)):
                shapes[f"{tower}/{i}/w"] = (sizes[i], sizes[i + 1])
                shapes[f"{tower}/{i}/b"] = (sizes[i + 1],)
        shapes["pi/out/w"] = (self.hidden[-1], self.num_outputs)
        shapes["pi/out/b"] = (self.num_outputs,)
        shapes["vf/out/w"] = (self.hidden[-1], 1)
        shapes["vf/out/b"] = (1,)
        self.extra_params = dict(extra_params or {})
        for name, arr in self.extra_params.items():
            shapes[name] = tuple(np.shape(arr))
        self.layout = ParamLayout(shapes)

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Initial parameters from the seed: orthogonal weights (gain sqrt 2; 0.01 policy out; 1 value out)."""
        rng = seeding.generator(seed, seeding.MODEL_INIT)
        params = {}
        for name in self.layout.names:
            shape = self.layout.shapes[name]
            if name in self.extra_params:
                params[name] = np.asarray(self.extra_params[name], np.float32)
            elif name.endswith("/b"):
                params[name] = np.zeros(shape, np.float32)
            else:
                gain = 0.01 if name == "pi/out/w" else 1.0 if name == "vf/out/w" else np.sqrt(2.0)
                params[name] = orthogonal(rng, shape, gain)
        return params

    def _tower(self, ops, params, tower, x):
        act = ops.tanh if self.config.activation == "tanh" else ops.relu
        for i in range(len(self.hidden)):
            x = act(ops.matmul(x, params[f"{tower}/{i}/w"]) + params[f"{tower}/{i}/b"])
        return x

    def policy_out(self, ops, params, obs):
        h = self._tower(ops, params, "shared" if self.config.vf_share_layers else "pi", obs)
        return ops.matmul(h, params["pi/out/w"]) + params["pi/out/b"]

    def value(self, ops, params, obs):
        h = self._tower(ops, params, "shared" if self.config.vf_share_layers else "vf", obs)
        return ops.reshape(ops.matmul(h, params["vf/out/w"]) + params["vf/out/b"], (-1,))

    def forward(self, ops, params, obs):
        """(policy outputs [B, num_outputs], values [B])."""
        if self.config.vf_share_layers:
            h = self._tower(ops, params, "shared", obs)
            out = ops.matmul(h, params["pi/out/w"]) + params["pi/out/b"]
            v = ops.matmul(h, params["vf/out/w"]) + params["vf/out/b"]
            return out, ops.reshape(v, (-1,))
        return self.policy_out(ops, params, obs), self.value(ops, params, obs)
