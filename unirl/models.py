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

import dataclasses
import typing
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unirl import seeding
from unirl.errors import UnirlError, did_you_mean

ACTIVATIONS = ("tanh", "relu", "swish")


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
    #: Hidden activation: "tanh", "relu" or "swish" (x sigmoid(x)).
    activation: str = "tanh"
    #: Actor-critic: share the hidden layers between policy and value heads.
    vf_share_layers: bool = False
    #: Q head: dueling architecture (Wang et al. 2016), value and advantage streams.
    dueling: bool = False
    #: Gain of the orthogonal init of the policy output layer (small: near-uniform initial actions).
    pi_out_gain: float = 0.01
    #: Initial log standard deviation of a diagonal Gaussian (Box actions on actor-critic modules).
    log_std_init: float = 0.0
    #: Normalise observations inside the module with running statistics (parameters
    #: obs_norm/mean, obs_norm/std, set by the learner; see unirl.normalization). The config key
    #: `normalize_observations` sets it.
    normalize_observations: bool = False
    #: Clip normalised observations to +- this.
    normalize_clip: float = 10.0
    #: Convolutional torso for image observations: [[out_channels, kernel, stride], ...] (relu after
    #: each, NHWC). None: chosen from the observation space (3-D Box: the Nature CNN of Mnih et al.
    #: 2015 for frames of at least 36x36, the small MinAtar CNN below that; otherwise none); []: none.
    conv_filters: typing.Optional[list] = None
    #: Padding of every convolution: "VALID" or "SAME".
    conv_padding: str = "VALID"
    #: Observations are multiplied by this inside the module (0: 1/255 for uint8 observations, else 1).
    obs_scale: float = 0.0
    #: A module of your own: "pkg.module:factory", called as factory(obs_space, action_space, model_config, kind).
    custom_module: str = ""
    #: Memory: a recurrent cell of this many units after the torso (0: feed-forward). Actor-critic modules
    #: (PPO, A2C, A3C, IMPALA, APPO) and R2D2's Q module; see unirl.recurrent.
    lstm_cell_size: int = 0
    #: The recurrent cell: "lstm" (Hochreiter and Schmidhuber 1997) or "gru" (Cho et al. 2014).
    cell_type: str = "lstm"
    #: Learners backpropagate through sequences of this many steps (truncated BPTT), each starting from the
    #: recurrent state stored at its start; the rollout length must be a multiple of it.
    max_seq_len: int = 32

    def validate(self, allow_linear: bool = False) -> None:
        if self.activation not in ACTIVATIONS:
            raise UnirlError(
                f"model activation `{self.activation}` is unknown; choose one of {list(ACTIVATIONS)}."
                + did_you_mean(self.activation, ACTIVATIONS)
            )
        if self.conv_padding not in ("VALID", "SAME"):
            raise UnirlError(f"model conv_padding must be \"VALID\" or \"SAME\", got {self.conv_padding!r}.")
        if self.conv_filters is not None and not all(
                isinstance(f, (list, tuple)) and len(f) == 3 and all(isinstance(v, int) and v > 0 for v in f)
                for f in self.conv_filters):
            raise UnirlError(f"model conv_filters must be [[out_channels, kernel, stride], ...], got {self.conv_filters!r}.")
        if self.cell_type not in ("lstm", "gru"):
            raise UnirlError(f"model cell_type must be \"lstm\" or \"gru\", got {self.cell_type!r}."
                             + did_you_mean(str(self.cell_type), ("lstm", "gru")))
        if self.lstm_cell_size < 0 or self.max_seq_len < 1:
            raise UnirlError(f"model lstm_cell_size must be >= 0 and max_seq_len >= 1, got {self.lstm_cell_size} "
                             f"and {self.max_seq_len}.")
        if (not self.hidden_sizes and not allow_linear) or any(int(h) <= 0 for h in self.hidden_sizes):
            raise UnirlError(f"model hidden_sizes must be positive integers, got {list(self.hidden_sizes)}.")


#: The Nature CNN's convolutions (Mnih et al. 2015): 32 8x8/4, 64 4x4/2, 64 3x3/1; with hidden_sizes [512].
NATURE_CNN = [[32, 8, 4], [64, 4, 2], [64, 3, 1]]
#: MinAtar's network (Young and Tian 2019): one 16-filter 3x3/1 convolution; with hidden_sizes [128].
MINATAR_CNN = [[16, 3, 1]]


def default_conv_filters(obs_shape) -> list:
    """The convolutional torso for an observation shape: none for flat observations."""
    if len(obs_shape) != 3:
        return []
    return NATURE_CNN if min(obs_shape[0], obs_shape[1]) >= 36 else MINATAR_CNN


def torso_shapes(prefix: str, obs_shape: tuple, config) -> tuple[dict, int]:
    """Parameter shapes of a tower (convolutions `prefix/conv{i}`, then the MLP `prefix/{i}`) and its input width."""
    from unirl.ops import conv_output_size

    shapes: dict[str, tuple[int, ...]] = {}
    filters = config.conv_filters or []
    if filters:
        h, w, c = obs_shape
        for i, (out, k, stride) in enumerate(filters):
            shapes[f"{prefix}/conv{i}/w"] = (int(k), int(k), int(c), int(out))
            shapes[f"{prefix}/conv{i}/b"] = (int(out),)
            h = conv_output_size(h, int(k), int(stride), config.conv_padding)[0]
            w = conv_output_size(w, int(k), int(stride), config.conv_padding)[0]
            c = int(out)
            if h < 1 or w < 1:
                raise UnirlError(f"model conv_filters {filters} shrink the {obs_shape} observation to nothing.")
        flat = int(h * w * c)
    else:
        flat = int(np.prod(obs_shape, dtype=np.int64))
    shapes.update(mlp_shapes(prefix, [flat] + [int(x) for x in config.hidden_sizes]))
    return shapes, flat


def activation(ops, name: str):
    """The hidden activation `name` (ACTIVATIONS) on the neutral ops; swish is x sigmoid(x) (Ramachandran et al. 2017)."""
    if name == "tanh":
        return ops.tanh
    if name == "swish":
        return lambda x: x * ops.sigmoid(x)
    return ops.relu


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

    def __init__(self, obs_dim, dist, config: ModelConfig, shapes: dict, gains: dict):
        self.obs_shape = tuple(int(d) for d in np.atleast_1d(obs_dim))
        self.obs_dim = int(np.prod(self.obs_shape, dtype=np.int64))
        self.dist = dist
        self.config = config
        self.hidden = [int(h) for h in config.hidden_sizes]
        if config.normalize_observations:
            shapes = {"obs_norm/mean": self.obs_shape, "obs_norm/std": self.obs_shape, **shapes}
        self.layout = ParamLayout(shapes)
        self.gains = gains

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        """Initial parameters from the seed: orthogonal weights (gain per layer), zero biases."""
        rng = seeding.generator(seed, seeding.MODEL_INIT)
        params = {}
        for name in self.layout.names:
            shape = self.layout.shapes[name]
            if name.endswith("/b") or len(shape) not in (2, 4):
                params[name] = np.zeros(shape, np.float32)  # biases; a distribution's own parameters are set below
            elif len(shape) == 4:  # a convolution [kh, kw, C, O]: orthogonal over its [kh * kw * C, O] matrix
                flat = (shape[0] * shape[1] * shape[2], shape[3])
                params[name] = orthogonal(rng, flat, self.gains.get(name, np.sqrt(2.0))).reshape(shape)
            else:
                params[name] = orthogonal(rng, shape, self.gains.get(name, np.sqrt(2.0)))
        if "obs_norm/std" in params:
            params["obs_norm/std"] = np.ones_like(params["obs_norm/std"])
        return params

    def _act(self, ops):
        return activation(ops, self.config.activation)

    @property
    def forward_rows_multiple(self) -> int:
        """Policy pads acting and learner batches to a multiple of this many rows (bounding the
        shapes compiled frameworks trace): 64 for MLPs, 8 for CNNs, whose products already run
        over every image position in 64-row blocks (padding to 64 images would cost 64 images)."""
        return 8 if self.config.conv_filters else 64

    def preprocess(self, ops, params, obs):
        """Observations as the torso takes them: normalised with the frozen running statistics if enabled."""
        obs = ops.cast_float(obs)  # frames arrive as uint8
        scale = float(self.config.obs_scale or 1.0)
        if scale != 1.0:
            obs = obs * scale
        if not self.config.normalize_observations:
            return obs
        c = float(self.config.normalize_clip)
        z = (obs - ops.stop_gradient(params["obs_norm/mean"])) / ops.stop_gradient(params["obs_norm/std"])
        return ops.clip(z, -c, c)

    def tower(self, ops, params, prefix: str, x):
        x = self.preprocess(ops, params, x)
        filters = self.config.conv_filters or []
        for i, (_, _, stride) in enumerate(filters):
            x = ops.relu(ops.conv2d(x, params[f"{prefix}/conv{i}/w"], int(stride), self.config.conv_padding)
                         + params[f"{prefix}/conv{i}/b"])
        if filters or len(self.obs_shape) != 1:
            x = ops.reshape(x, (-1, self.torso_width))
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
            tower_shapes, self.torso_width = torso_shapes(tower, tuple(np.atleast_1d(obs_dim)), config)
            shapes.update(tower_shapes)
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


def q_head_shapes(width: int, n: int, dueling: bool) -> tuple[dict, dict]:
    """(parameter shapes, init gains) of a Q head on features of `width`: `q/out`, or dueling `adv/out` and `value/out`."""
    if dueling:
        return ({"adv/out/w": (width, n), "adv/out/b": (n,), "value/out/w": (width, 1), "value/out/b": (1,)},
                {"adv/out/w": 1.0, "value/out/w": 1.0})
    return {"q/out/w": (width, n), "q/out/b": (n,)}, {"q/out/w": 1.0}


def q_head(module, ops, params, h):
    """Q-values [B, n] from features h: one layer, or dueling (value + centred advantage)."""
    if not module.config.dueling:
        return module.dense(ops, params, "q/out", h)
    adv = module.dense(ops, params, "adv/out", h)
    value = module.dense(ops, params, "value/out", h)
    centred = adv - ops.reshape(ops.mean(adv, axis=-1), (-1, 1))
    return value + centred


class QNetwork(Module):
    """Q-values for each of `n` actions on an MLP tower; dueling (value + centred advantage) optional."""

    kind = "q"

    def __init__(self, obs_dim: int, dist, config: ModelConfig):
        config.validate()
        hidden = [int(h) for h in config.hidden_sizes]
        shapes, self.torso_width = torso_shapes("q", tuple(np.atleast_1d(obs_dim)), config)
        head, gains = q_head_shapes(hidden[-1], dist.num_inputs, config.dueling)
        shapes.update(head)
        super().__init__(obs_dim, dist, config, shapes, gains)

    def forward_inference(self, ops, params, obs):
        return q_head(self, ops, params, self.tower(ops, params, "q", obs))

    def forward_train(self, ops, params, obs) -> dict:
        """{"q": [B, n]}."""
        return {"q": self.forward_inference(ops, params, obs)}


class PolicyNetwork(Module):
    """A policy head only (no value): what evolution strategies and ARS perturb. No hidden layer: linear."""

    kind = "policy"

    def __init__(self, obs_dim: int, dist, config: ModelConfig):
        config.validate(allow_linear=True)
        if config.normalize_observations:
            raise UnirlError("normalize_observations is for actor-critic and Q modules; ES and ARS keep their own "
                             "observation filter.")
        hidden = [int(h) for h in config.hidden_sizes]
        shapes = mlp_shapes("pi", [int(np.prod(obs_dim))] + hidden)
        self.torso_width = int(np.prod(obs_dim))
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


class ActorQ(Module):
    """An actor and twin Q critics on MLP towers (off-policy actor-critic: SAC, TD3, DDPG), and SAC's temperature.

    Parameters, in this order (each learner trains a consecutive part): `pi/...` (the actor's tower and
    head, dist.num_outputs wide), `q1/...` and `q2/...` (each a tower over [observation, action] with one
    output for Box actions; over the observation with one output per action for Discrete ones) and
    `log_alpha` (the log entropy temperature, a parameter set of its own for SAC; unused by TD3).
    `forward_inference` gives the actor's distribution inputs (what acting needs).
    """

    kind = "actor_q"

    def __init__(self, obs_dim, dist, config: ModelConfig, initial_log_alpha: float = 0.0):
        config.validate()
        if config.conv_filters or np.ndim(obs_dim) != 0:
            raise UnirlError("the off-policy actor-critic module (SAC, TD3) takes flat Box observations; image "
                             "observations need a convolutional torso it does not have yet.")
        hidden = [int(h) for h in config.hidden_sizes]
        self.discrete = not hasattr(dist, "dim")
        self.action_dim = 0 if self.discrete else dist.dim
        q_in = int(obs_dim) + self.action_dim
        q_out = dist.n if self.discrete else 1
        shapes = mlp_shapes("pi", [int(obs_dim)] + hidden)
        shapes.update({"pi/out/w": (hidden[-1], dist.num_outputs), "pi/out/b": (dist.num_outputs,)})
        for q in ("q1", "q2"):
            shapes.update(mlp_shapes(q, [q_in] + hidden))
            shapes.update({f"{q}/out/w": (hidden[-1], q_out), f"{q}/out/b": (q_out,)})
        shapes["log_alpha"] = (1,)
        self.torso_width = int(obs_dim)
        self.initial_log_alpha = float(initial_log_alpha)
        super().__init__(obs_dim, dist, config, shapes,
                         {"pi/out/w": config.pi_out_gain, "q1/out/w": 1.0, "q2/out/w": 1.0})

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        params = super().init_params(seed)
        params["log_alpha"] = np.full((1,), self.initial_log_alpha, np.float32)
        return params

    def forward_inference(self, ops, params, obs):
        h = self.tower(ops, params, "pi", obs)
        return self.dist.inputs(ops, params, self.dense(ops, params, "pi/out", h))

    def forward_train(self, ops, params, obs) -> dict:
        return {"dist_inputs": self.forward_inference(ops, params, obs)}

    def q(self, ops, params, critic: str, obs, actions=None):
        """Critic `critic` ("q1" or "q2"): Q(s, a) [B] for Box actions; Q(s, .) [B, n] for Discrete ones (actions None)."""
        x = self.preprocess(ops, params, obs)
        if not self.discrete:
            x = ops.concat([x, ops.reshape(ops.cast_float(actions), (-1, self.action_dim))], axis=-1)
        act = self._act(ops)
        for i in range(len(self.hidden)):
            x = act(ops.matmul(x, params[f"{critic}/{i}/w"]) + params[f"{critic}/{i}/b"])
        out = self.dense(ops, params, f"{critic}/out", x)
        return out if self.discrete else ops.reshape(out, (-1,))


class Masked:
    """A module whose observations end with an action mask (unirl.spaces.FlatDict): the inner module reads the
    features, and its head's outputs (logits or Q-values) of masked actions become unirl.spaces.MASKED, so
    they are never sampled nor the argmax, and have probability exactly 0 in log-probs and entropies.

    Everything else (layout, parameters, value head, kind) is the inner module's."""

    def __init__(self, inner, mask_size: int):
        if inner.kind not in ("actor_critic", "q"):
            raise UnirlError(f"action masks work with actor-critic and Q modules (PPO, A2C, IMPALA, DQN, ...); the "
                             f"`{inner.kind}` module of this algorithm does not take them.")
        if getattr(inner.dist, "n", None) != mask_size or not hasattr(inner.dist, "n"):
            raise UnirlError(f"an action mask of {mask_size} entries needs a Discrete action space of {mask_size} "
                             f"actions; this module's distribution is {type(inner.dist).__name__}.")
        from unirl.distributions import masked

        self.inner = inner
        self.mask_size = int(mask_size)
        self.feature_size = inner.obs_dim
        self.dist = masked(inner.dist)
        self.obs_shape = (self.feature_size + self.mask_size,)
        self.obs_dim = self.obs_shape[0]

    def __getattr__(self, name):
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def split(self, ops, obs):
        """(features, mask) of a batch of flat observations; the features in the inner module's observation shape
        (an image key keeps its [H, W, C] layout for the convolutional torso)."""
        feats, mask = ops.split(ops.cast_float(obs), [self.feature_size, self.mask_size], axis=1)
        if len(self.inner.obs_shape) > 1:
            feats = ops.reshape(feats, (-1,) + tuple(self.inner.obs_shape))
        return feats, mask

    def mask_outputs(self, out, mask):
        from unirl.spaces import MASKED

        return out + (1.0 - mask) * MASKED

    def forward_inference(self, ops, params, obs):
        feats, mask = self.split(ops, obs)
        return self.mask_outputs(self.inner.forward_inference(ops, params, feats), mask)

    def forward_train(self, ops, params, obs) -> dict:
        feats, mask = self.split(ops, obs)
        out = dict(self.inner.forward_train(ops, params, feats))
        key = "q" if "q" in out else "dist_inputs"
        out[key] = self.mask_outputs(out[key], mask)
        return out

    def value(self, ops, params, obs):
        return self.inner.value(ops, params, self.split(ops, obs)[0])


#: Gates per unit: LSTM input, forget, cell, output; GRU reset, update, candidate.
GATES = {"lstm": 4, "gru": 3}


class RecurrentModule(Module):
    """Torso (convolutions and MLP, `torso/...`), a recurrent cell (`rnn/...`) and heads on its output; the heads are
    the subclass's (`heads(ops, params, h)`, their parameters after the cell's).

    The acting state of an env is one float32 vector: [h, c] for an LSTM (2 x lstm_cell_size), h for a GRU."""

    recurrent = True
    #: The head output acting reads (the distribution's inputs).
    acting_output = "dist_inputs"

    def __init__(self, obs_dim, dist, config, head_shapes: dict, head_gains: dict):
        config.validate()
        self.cell = config.cell_type
        self.size = int(config.lstm_cell_size)
        self.max_seq_len = int(config.max_seq_len)
        shapes, self.torso_width = torso_shapes("torso", tuple(np.atleast_1d(obs_dim)), config)
        width = int(config.hidden_sizes[-1])
        g = GATES[self.cell] * self.size
        shapes.update({"rnn/wx": (width, g), "rnn/wh": (self.size, g), "rnn/b": (g,)})
        if self.cell == "gru":
            shapes["rnn/bh"] = (g,)
        shapes.update(head_shapes)
        super().__init__(obs_dim, dist, config, shapes, dict(head_gains, **{"rnn/wx": 1.0, "rnn/wh": 1.0}))

    @property
    def acting_state_shape(self) -> tuple[int]:
        return (2 * self.size if self.cell == "lstm" else self.size,)

    def heads(self, ops, params, h) -> dict:
        raise NotImplementedError

    # -- the cell ----------------------------------------------------------------------------
    def cell_step(self, ops, params, x, state):
        """(output [B, size], next state [B, state]) of one step on torso features x [B, width]."""
        n = self.size
        if self.cell == "lstm":
            h, c = ops.split(state, [n, n], axis=1)
            z = ops.matmul(x, params["rnn/wx"]) + ops.matmul(h, params["rnn/wh"]) + params["rnn/b"]
            i, f, g, o = ops.split(z, [n, n, n, n], axis=1)
            c = ops.sigmoid(f + 1.0) * c + ops.sigmoid(i) * ops.tanh(g)  # forget bias 1 (Jozefowicz et al. 2015)
            h = ops.sigmoid(o) * ops.tanh(c)
            return h, ops.concat([h, c], axis=1)
        gx = ops.matmul(x, params["rnn/wx"]) + params["rnn/b"]
        gh = ops.matmul(state, params["rnn/wh"]) + params["rnn/bh"]
        xr, xz, xn = ops.split(gx, [n, n, n], axis=1)
        hr, hz, hn = ops.split(gh, [n, n, n], axis=1)
        r = ops.sigmoid(xr + hr)
        u = ops.sigmoid(xz + hz)
        h = (1.0 - u) * ops.tanh(xn + r * hn) + u * state
        return h, h

    def step(self, ops, params, obs, state) -> dict:
        """One step for a batch of envs: the heads' outputs and "state" (the next one)."""
        h, state = self.cell_step(ops, params, self.tower(ops, params, "torso", obs), state)
        return dict(self.heads(ops, params, h), state=state)

    def cell_sequences(self, ops, params, obs, state_in, resets):
        """(the cell's outputs [S * L, size] as rows in sequence order, the state after each sequence's last step
        [S, state]) of S sequences of L steps: obs and resets are rows in sequence order ([S * L, ...], sequence
        s's step l at row s * L + l), state_in [S, state] each sequence's state at its first step. The torso runs
        on all rows at once, the cell step by step."""
        s = int(state_in.shape[0])
        x = self.tower(ops, params, "torso", obs)
        steps = int(x.shape[0]) // s
        x = ops.reshape(x, (s, steps, -1))
        keep = 1.0 - ops.reshape(resets, (s, steps))
        state, outs = state_in, []
        for t in range(steps):
            state = state * keep[:, t:t + 1]
            h, state = self.cell_step(ops, params, x[:, t, :], state)
            outs.append(ops.reshape(h, (s, 1, self.size)))
        return ops.reshape(ops.concat(outs, axis=1), (s * steps, self.size)), state

    def forward_sequences(self, ops, params, obs, state_in, resets) -> dict:
        """The heads' outputs of S sequences (see `cell_sequences`), as rows in the same order."""
        return self.heads(ops, params, self.cell_sequences(ops, params, obs, state_in, resets)[0])

    # -- the Module interface: one step from a zero state (an episode's first step) --------------
    def forward_train(self, ops, params, obs) -> dict:
        """Rows as an episode's first steps (zero state): what a feed-forward caller of the module sees."""
        x = self.tower(ops, params, "torso", obs)
        gates = ops.zeros_like(ops.matmul(x, params["rnn/wx"]))  # [B, gates * size]: zeros of a known row count
        d = self.acting_state_shape[0]
        state = ops.split(gates, [d, GATES[self.cell] * self.size - d], axis=1)[0]
        out, _ = self.cell_step(ops, params, x, state)
        return self.heads(ops, params, out)

    def forward_inference(self, ops, params, obs):
        return self.forward_train(ops, params, obs)[self.acting_output]

    def act(self, policy, obs, noise, state, **explore):
        """(actions, distribution inputs, next states) of one step of a worker's envs from their states."""
        if state is None:
            state = np.zeros((len(obs),) + self.acting_state_shape, np.float32)
        out = policy.call(recurrent_step, {"obs": np.asarray(obs, np.float32), "state": np.asarray(state, np.float32)},
                          pad_rows=True)
        inputs = out[self.acting_output]
        if noise is None:
            return policy.dist.greedy_numpy(inputs), inputs, out["state"]
        return policy.dist.sample_numpy(inputs, noise, **explore), inputs, out["state"]


class RecurrentActorCritic(RecurrentModule):
    """A recurrent module with policy and value heads (`pi/out`, `vf/out`) sharing the cell: PPO, A2C, A3C, IMPALA,
    APPO."""

    kind = "actor_critic"

    def __init__(self, obs_dim, dist, config):
        size = int(config.lstm_cell_size)
        shapes = {"pi/out/w": (size, dist.num_outputs), "pi/out/b": (dist.num_outputs,),
                  "vf/out/w": (size, 1), "vf/out/b": (1,)}
        shapes.update(dist.extra_param_shapes())
        super().__init__(obs_dim, dist, config, shapes, {"pi/out/w": config.pi_out_gain, "vf/out/w": 1.0})

    def init_params(self, seed: int) -> dict[str, np.ndarray]:
        params = super().init_params(seed)
        params.update(self.dist.extra_param_init())
        return params

    def heads(self, ops, params, h) -> dict:
        return {"dist_inputs": self.dist.inputs(ops, params, self.dense(ops, params, "pi/out", h)),
                "values": ops.reshape(self.dense(ops, params, "vf/out", h), (-1,))}

    def value(self, ops, params, obs):
        return self.forward_train(ops, params, obs)["values"]


class RecurrentQ(RecurrentModule):
    """A recurrent module with a Q head (`q/out`, or dueling `adv/out` and `value/out`): R2D2."""

    kind = "q"
    acting_output = "q"

    def __init__(self, obs_dim, dist, config):
        super().__init__(obs_dim, dist, config, *q_head_shapes(int(config.lstm_cell_size), dist.num_inputs,
                                                                config.dueling))

    def heads(self, ops, params, h) -> dict:
        return {"q": q_head(self, ops, params, h)}


def recurrent_step(ops, module, params, batch):
    """One step of a recurrent module for a batch of envs (Policy.call): its heads' outputs and "state"."""
    return module.step(ops, params, batch["obs"], batch["state"])


def train_outputs(ops, module, params, batch) -> dict:
    """The module's training outputs on a learner minibatch: rows (module.forward_train on the observations), or
    whole sequences from their stored states (a recurrent module's minibatch: columns STATE_IN and RESETS)."""
    from unirl import sample_batch as sb

    if sb.STATE_IN in batch:
        return module.forward_sequences(ops, params, batch[sb.OBS], batch[sb.STATE_IN], batch[sb.RESETS])
    return module.forward_train(ops, params, batch[sb.OBS])


def _features_space(space):
    """The observation space the inner module of a masked FlatDict reads: a Dict with one image key besides the mask
    (a board game's [rows, columns, planes]) keeps its shape, so the default torso is convolutional; otherwise the
    flat features."""
    import gymnasium as gym

    low, high = space.low[:space.feature_size], space.high[:space.feature_size]
    if len(space.parts) == 1 and space.parts[0][1] == "box" and len(space.shapes[0]) == 3:
        shape = tuple(space.shapes[0])
        return gym.spaces.Box(low.reshape(shape), high.reshape(shape), dtype=np.float32)
    return gym.spaces.Box(low, high, dtype=np.float32)


RECURRENT_KINDS = {"actor_critic": RecurrentActorCritic, "q": RecurrentQ}
MODULE_KINDS = {"actor_critic": ActorCritic, "q": QNetwork, "policy": PolicyNetwork, "actor_q": ActorQ,
                "deterministic_actor_q": ActorQ}


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
    from unirl.spaces import FlatDict, flat_space

    obs_space = flat_space(obs_space, action_space)
    if isinstance(obs_space, FlatDict) and obs_space.mask_size:
        if config.lstm_cell_size:
            raise UnirlError("a recurrent model (model.lstm_cell_size) does not take action masks yet.")
        return Masked(build_module(kind, _features_space(obs_space), action_space, config), obs_space.mask_size)
    shape = tuple(obs_space.shape or ())
    if not shape or len(shape) > 3:
        raise UnirlError(f"observation space {obs_space} is not supported; unirl's modules take Box observations "
                         "of 1 (MLP), 2 (flattened) or 3 (HWC image: CNN) dimensions.")
    changes = {}
    if config.conv_filters is None:
        changes["conv_filters"] = default_conv_filters(shape) if kind in ("actor_critic", "q") else []
    if not config.obs_scale:
        uint8 = np.dtype(obs_space.dtype) == np.uint8 and np.all(np.asarray(obs_space.high) == 255)
        changes["obs_scale"] = 1.0 / 255.0 if uint8 else 1.0
    if changes:
        config = dataclasses.replace(config, **changes)
    obs_dim = shape[0] if len(shape) == 1 else shape
    dist = for_action_space(action_space, kind, config.log_std_init)
    if config.lstm_cell_size:
        if kind not in RECURRENT_KINDS:
            raise UnirlError(f"a recurrent model (model.lstm_cell_size) is built for actor-critic algorithms (PPO, A2C, A3C, "
                             f"IMPALA, APPO) and R2D2's Q module; this algorithm's module is `{kind}`.")
        return RECURRENT_KINDS[kind](obs_dim, dist, config)
    return MODULE_KINDS[kind](obs_dim, dist, config)
