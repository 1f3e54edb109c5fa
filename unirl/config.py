"""Typed config dataclasses: every option visible with its docstring, validated when built from a dict."""
from __future__ import annotations

import collections.abc
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from typing import Any

from unirl.errors import UnirlError, did_you_mean
from unirl.models import ModelConfig


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Coerce ints to floats where a float is wanted; raise a clear error for anything else that does not fit."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Union and type(None) in args:  # Optional[X]: None or an X
        if value is None:
            return value
        inner = [a for a in args if a is not type(None)]
        return _check_type(key, value, inner[0]) if len(inner) == 1 else value
    if typing.get_origin(annotation) in (list, collections.abc.Sequence) and args == (int,):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise UnirlError(f"config key `{key}` must be a list of integers, got {value!r}.")
        return value
    ann = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    ann = ann.replace("typing.", "")
    if value is None and ("None" in ann or "Optional" in ann):
        return value
    if ann.startswith("float") or ann == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnirlError(f"config key `{key}` must be a number, got {value!r}.")
        return float(value)
    if ann.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UnirlError(f"config key `{key}` must be an integer, got {value!r}.")
        return value
    if ann.startswith("bool"):
        if not isinstance(value, bool):
            raise UnirlError(f"config key `{key}` must be true or false, got {value!r}.")
        return value
    if ann.startswith("str"):
        if not isinstance(value, str):
            raise UnirlError(f"config key `{key}` must be a string, got {value!r}.")
        return value
    if ann.startswith("list"):
        if not isinstance(value, list):
            raise UnirlError(f"config key `{key}` must be a JSON list, got {value!r}.")
        return value
    if ann.startswith("dict"):
        if not isinstance(value, dict):
            raise UnirlError(f"config key `{key}` must be a JSON object, got {value!r}.")
        return value
    return value


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024


def physical_memory() -> int:
    """This machine's memory in bytes (0 if unknown)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_batch_memory(config: "AlgorithmConfig", obs_space) -> None:
    """Refuse a train_batch_size (or replay buffer) whose observations alone would not fit in this
    machine's memory, before any worker tries to allocate it."""
    import numpy as np

    shape = getattr(obs_space, "shape", None) or ()
    itemsize = np.dtype(getattr(obs_space, "dtype", None) or np.float32).itemsize
    per_step = int(np.prod(shape, dtype=np.float64)) * itemsize + 16  # obs + action, reward, flags
    total = physical_memory()
    for key in ("train_batch_size", "replay_buffer_capacity"):
        n = getattr(config, key, None)
        if isinstance(n, int) and total and n * per_step > total:
            raise UnirlError(f"config key `{key}` {n:,} needs at least {_bytes(n * per_step)} of memory "
                             f"({per_step} bytes per step of `{config.env}`), more than this machine's "
                             f"{_bytes(total)}; lower it.")


def unknown_key_error(key: str, valid: list[str], where: str = "config") -> UnirlError:
    return UnirlError(
        f"unknown {where} key `{key}`." + did_you_mean(key, valid) + f" Valid keys: {', '.join(sorted(valid))}."
    )


@dataclass
class AlgorithmConfig:
    """Options shared by every algorithm."""

    #: Gymnasium env id.
    env: str = "CartPole-v1"
    #: Keyword arguments for gymnasium.make.
    env_config: dict = field(default_factory=dict)
    #: Deep-learning framework: "torch", "tf" or "jax" (or an adapter import path).
    framework: str = "torch"
    #: Execution backend: "local", "multiprocessing", "ray", "mpi" (or a backend import path).
    backend: str = "local"
    #: Options for the backend, e.g. {"address": "auto"} for Ray.
    backend_options: dict = field(default_factory=dict)
    #: Rollout workers; each hosts num_envs_per_worker envs.
    num_workers: int = 1
    #: Envs stepped together (a Gymnasium vector env) in each worker.
    num_envs_per_worker: int = 8
    #: Env steps per training iteration, over all envs (a multiple of the total number of envs).
    train_batch_size: int = 256
    #: Run seed: every random stream derives from it (and the global env index).
    seed: int = 0
    #: Discount factor.
    gamma: float = 0.99
    #: Adam learning rate.
    lr: float = 3e-4
    #: Decay the learning rate linearly from lr to lr_final over this many env steps (0: constant lr).
    lr_decay_timesteps: int = 0
    #: The learning rate reached after lr_decay_timesteps (kept from then on).
    lr_final: float = 0.0
    #: Piecewise-linear learning-rate schedule [[timestep, lr], ...]; overrides lr and the decay when set.
    lr_schedule: typing.Optional[list] = None
    #: Clip the gradient to this global norm (0 disables).
    grad_clip: float = 0.5
    #: The neutral model (see unirl.models.ModelConfig): hidden_sizes, activation, vf_share_layers.
    model: dict = field(default_factory=dict)
    #: Normalise observations with running mean/std kept by the learner (see unirl.normalization).
    normalize_observations: bool = False
    #: Scale rewards by the running std of the discounted return (synchronous algorithms).
    normalize_rewards: bool = False
    #: Clip normalised observations and rewards to +- this.
    normalize_clip: float = 10.0
    #: Reproducible mode: framework deterministic algorithms and pinned threads.
    deterministic: bool = True
    #: Threads per process for the framework's intra-op pool.
    num_threads: int = 1
    #: Greedy episodes in an evaluation (at the end of `unirl train`, and by `evaluate`).
    evaluation_num_episodes: int = 20
    #: Episodes averaged in episode_return_mean.
    metrics_num_episodes_for_smoothing: int = 100
    #: Replace a worker that dies, raises or hangs, and redo its work (None: on where the backend can,
    #: i.e. multiprocessing and ray; see docs/faults.md).
    recreate_failed_workers: typing.Optional[bool] = None
    #: Seconds a worker may take to answer before it counts as hung and is replaced (None: wait, warning every 60 s).
    worker_timeout_s: typing.Optional[float] = None
    #: Replacements allowed within an hour before the run stops.
    max_worker_restarts: int = 10
    #: Multi-agent runs (a PettingZoo env): {"policies": {id: {config overrides}}, "policy_mapping": {agent: id} or
    #: "module:fn", "policies_to_train": [id, ...], "self_play": {...}}; see unirl.multi_agent and docs/multiagent.md.
    multi_agent: dict = field(default_factory=dict)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: dict | None = None, **overrides) -> "AlgorithmConfig":
        if d is not None and not isinstance(d, dict):
            hint = (f" To set the env: unirl.build(\"PPO\", {{\"env\": {json.dumps(d)}}})." if isinstance(d, str) else "")
            raise UnirlError(f"the config must be a dict of config keys, got {type(d).__name__} {d!r}.{hint}")
        d = dict(d or {})
        d.update(overrides)
        if "env" in d and not isinstance(d["env"], str):
            from unirl.env import register_custom_env  # a gym.Env class or a creator function

            d["env"] = register_custom_env(d["env"])
        hints = typing.get_type_hints(cls)
        valid = cls.field_names()
        kwargs = {}
        for key, value in d.items():
            if key not in valid:
                raise unknown_key_error(key, valid)
            kwargs[key] = _check_type(key, value, hints[key])
        config = cls(**kwargs)
        config.validate()
        return config

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def replace(self, **changes) -> "AlgorithmConfig":
        d = self.to_dict()
        d.update(changes)
        return type(self).from_dict(d)

    @property
    def num_envs(self) -> int:
        return self.num_workers * self.num_envs_per_worker

    @property
    def rollout_length(self) -> int:
        return self.train_batch_size // self.num_envs

    def model_config(self) -> ModelConfig:
        valid = [f.name for f in dataclasses.fields(ModelConfig)]
        for key in self.model:
            if key not in valid:
                raise unknown_key_error(key, valid, where="model config")
        hints = typing.get_type_hints(ModelConfig)
        m = ModelConfig(**{k: _check_type(f"model.{k}", v, hints[k]) for k, v in self.model.items()})
        if getattr(self, "normalize_observations", False):
            m.normalize_observations = True
            m.normalize_clip = float(self.normalize_clip)
        try:
            m.validate()
        except UnirlError:
            raise
        except (TypeError, ValueError) as e:
            raise UnirlError(f"config key `model` is not valid: {e}.") from None
        return m

    def validate(self) -> None:
        for key in ("num_workers", "num_envs_per_worker", "train_batch_size", "evaluation_num_episodes",
                    "metrics_num_episodes_for_smoothing", "num_threads"):
            if getattr(self, key) < 1:
                raise UnirlError(f"config key `{key}` must be at least 1, got {getattr(self, key)}.")
        if self.seed < 0:
            raise UnirlError(f"config key `seed` must be 0 or more, got {self.seed}.")
        if not 0.0 <= self.gamma <= 1.0:
            raise UnirlError(f"config key `gamma` must lie in [0, 1], got {self.gamma}.")
        if not 0 < self.lr < math.inf:
            raise UnirlError(f"config key `lr` must be positive, got {self.lr}.")
        if self.lr_decay_timesteps < 0 or self.lr_final < 0:
            raise UnirlError("config keys `lr_decay_timesteps` and `lr_final` must not be negative.")
        self.check_sampling()
        if self.lr_schedule is not None:
            if not isinstance(self.lr_schedule, list) or not all(
                    isinstance(p, (list, tuple)) and len(p) == 2 for p in self.lr_schedule):
                raise UnirlError(f"config key `lr_schedule` must be a list of [timestep, lr] pairs, got {self.lr_schedule!r}.")
            for t, v in self.lr_schedule:
                if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in (t, v)):
                    raise UnirlError(f"config key `lr_schedule` must hold numbers, got the pair {[t, v]!r}.")
                if t < 0 or v < 0:
                    raise UnirlError(f"config key `lr_schedule` must not hold a negative timestep or learning rate, "
                                     f"got the pair {[t, v]!r}.")
        self.model_config()
        self.check_env()

    @classmethod
    def env_loads_no_code(cls, env) -> bool:
        """Whether building this algorithm's env from the name `env` runs only installed, known code (a checkpoint
        naming it loads without trust_checkpoint); Gymnasium ids are judged by the checkpoint loader itself."""
        return False

    def check_sampling(self) -> None:
        """A one-sentence error unless the envs split the train batch evenly (AlphaZero samples whole games)."""
        if self.train_batch_size % self.num_envs:
            raise UnirlError(
                f"train_batch_size {self.train_batch_size} is not a multiple of the number of envs "
                f"(num_workers {self.num_workers} x num_envs_per_worker {self.num_envs_per_worker} = {self.num_envs})."
            )

    def check_env(self) -> None:
        """A one-sentence error unless `env` names an env this algorithm can run (default: a Gymnasium env, or a
        PettingZoo one with `multi_agent`; AlphaZero takes OpenSpiel games)."""
        from unirl.env import check_env_id
        from unirl.multi_agent.env import is_multi_agent_env

        if is_multi_agent_env(self.env) or (self.multi_agent and ":" in self.env):
            from unirl.multi_agent.config import check_multi_agent

            check_multi_agent(self)
            return
        if self.multi_agent:
            raise UnirlError(f"config key `multi_agent` needs a PettingZoo environment (e.g. `mpe2.simple_spread_v3`, "
                             f"`pettingzoo.classic.connect_four_v3`, or `module:env_fn`); `{self.env}` is a "
                             "Gymnasium env.")
        check_env_id(self.env)


@dataclass
class AsyncConfig(AlgorithmConfig):
    """Options every asynchronous algorithm shares (A3C, IMPALA, Ape-X): a replayable arrival schedule."""

    #: Replay a recorded arrival schedule (the worker ids of a run's get_state()[1]["arrival_schedule"])
    #: instead of consuming results as they arrive; None: free-running.
    arrival_schedule: typing.Optional[list] = None

    def validate(self) -> None:
        super().validate()
        if self.arrival_schedule is not None and not (
                isinstance(self.arrival_schedule, list)
                and all(isinstance(w, int) and not isinstance(w, bool) for w in self.arrival_schedule)):
            raise UnirlError("config key `arrival_schedule` must be a list of worker ids (integers).")


@dataclass
class FragmentConfig(AsyncConfig):
    """Asynchronous algorithms whose workers return fixed-length fragments (A3C, IMPALA)."""

    #: Steps each env takes per fragment (a worker's fragment covers num_envs_per_worker x this).
    rollout_fragment_length: int = 8

    @property
    def fragment_size(self) -> int:
        return self.num_envs_per_worker * self.rollout_fragment_length

    def validate(self) -> None:
        super().validate()
        if self.rollout_fragment_length < 1:
            raise UnirlError(f"config key `rollout_fragment_length` must be at least 1, got {self.rollout_fragment_length}.")
        if self.train_batch_size % self.fragment_size:
            raise UnirlError(f"train_batch_size {self.train_batch_size} is not a multiple of one worker's fragment "
                             f"(num_envs_per_worker {self.num_envs_per_worker} x rollout_fragment_length "
                             f"{self.rollout_fragment_length} = {self.fragment_size}).")


@dataclass
class ReplayConfig(AlgorithmConfig):
    """Options of the replay execution patterns (unirl.execution.loops.SyncReplay, AsyncReplay): the buffer,
    the minibatches and the replay ratio (DQN, Ape-X, SAC, TD3)."""

    #: Rows the replay buffer holds (oldest dropped first).
    replay_buffer_capacity: int = 50_000
    #: Rows in each replayed minibatch (one gradient step).
    replay_batch_size: int = 64
    #: Env steps sampled before the first gradient step.
    learning_starts: int = 1000
    #: Gradient steps per sampled env step once learning has started (0.5: one step every 2 env steps).
    training_intensity: float = 0.5
    #: Prioritized replay (proportional, Schaul et al. 2016) instead of uniform.
    prioritized_replay: bool = False
    #: Priority exponent alpha (0: uniform).
    prioritized_replay_alpha: float = 0.6
    #: Importance-sampling exponent beta at the start; annealed linearly to 1.
    prioritized_replay_beta: float = 0.4
    #: Env steps over which beta reaches 1.
    prioritized_replay_beta_annealing_timesteps: int = 50_000
    #: Added to |TD error| so every row keeps a chance to be replayed.
    prioritized_replay_eps: float = 1e-6

    def validate(self) -> None:
        super().validate()
        for key in ("replay_buffer_capacity", "replay_batch_size"):
            if getattr(self, key) < 1:
                raise UnirlError(f"config key `{key}` must be at least 1, got {getattr(self, key)}.")
        if self.training_intensity < 0:
            raise UnirlError(f"config key `training_intensity` must not be negative, got {self.training_intensity}.")
        if self.learning_starts < 0:
            raise UnirlError("config key `learning_starts` must not be negative.")
        if self.prioritized_replay_alpha < 0 or self.prioritized_replay_beta < 0:
            raise UnirlError("config keys `prioritized_replay_alpha` and `prioritized_replay_beta` must not be negative.")


@dataclass
class AsyncReplayConfig(ReplayConfig, AsyncConfig):
    """Options of the async replay execution pattern (unirl.execution.loops.AsyncReplay: Ape-X DQN, Ape-X TD3):
    replay shards, the learner's requests, the actors' weight syncs and the learner/actor balance."""

    #: Replay shards (stateful workers holding a prioritized buffer each).
    num_replay_shards: int = 2
    #: Send the learner's weights to an actor when its copy is this many learner steps old.
    weight_sync_period: int = 16
    #: Minibatches the learner pulls from a shard in one request (and whose priorities it sends back in
    #: one message): a learner turn takes up to this many gradient steps. More divides the messages per
    #: learner step (each costs ~1 ms of CPU on Ray) at the price of priorities that lag by up to this
    #: many steps within a turn. 1 is the paper's learner: one minibatch per request.
    replay_batches_per_request: int = 1
    #: Actor results consumed per iteration (0: one per actor).
    actor_batches_per_iteration: int = 0
    #: Learner steps per env step the learner never falls below: the driver steps before it consumes more
    #: actor results (actors wait meanwhile). None (the default): training_intensity, so the replay ratio
    #: holds whatever the number of actors (a free learner falls behind 4 actors on 2 cores: its target
    #: network then syncs every few learner steps and Q diverges). 0: the learner runs free, as in the
    #: paper; training_intensity is the cap.
    min_training_intensity: typing.Optional[float] = None


    def validate(self) -> None:
        super().validate()
        if self.num_replay_shards < 1 or self.weight_sync_period < 1 or self.replay_batches_per_request < 1:
            raise UnirlError("config keys `num_replay_shards`, `weight_sync_period` and `replay_batches_per_request` "
                             "must be at least 1.")
        if self.min_training_intensity is None:
            self.min_training_intensity = self.training_intensity
        if not 0.0 <= self.min_training_intensity <= self.training_intensity:
            raise UnirlError("config key `min_training_intensity` must lie in [0, training_intensity], "
                             f"got {self.min_training_intensity}.")
