"""Evolution Strategies (Salimans et al. 2017): antithetic perturbations from a shared noise table, centered ranks, Adam.

No loss and no autodiff: workers only evaluate perturbed policies (the "population evaluation"
pattern, unirl.execution.population); the driver turns the returns into a gradient estimate

    g = 1 / (2n) * sum_i (rank(R_i+) - rank(R_i-)) * eps_i

and applies -g with the neutral optimizer chain (L2 weight decay, then Adam; unirl.optim) on
the NumPy ops. Why NumPy and not the policy's framework: the estimate is assembled in NumPy
from the NumPy noise table anyway, the update is a few vector operations (no compile, no copy
into the framework and back), and its bits are then the same on torch, tf and jax.

Perturbation indices are global (a run-wide counter), so noise offsets, episode seeds, the
order of the observation-filter merge and the update are the same for any backend and any
number of workers: ES is bit-identical across both. `PopulationAlgorithm` here is the shared
base of ES and ARS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unirl.algorithm import Algorithm
from unirl.config import AlgorithmConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.env import check_env_id, spaces
from unirl.errors import UnirlError
from unirl.evaluation import evaluate_policy
from unirl.execution import loops
from unirl.execution.population import noise_table, weighted_noise_sum
from unirl.filters import MeanStdFilter, RunningMeanStd, normalize
from unirl.ops import numpy_ops
from unirl.optim import adam, add_decayed_weights, chain
from unirl.policy import tree_paths, tree_replace


@dataclass
class PopulationConfig(AlgorithmConfig):
    """Options shared by ES and ARS (plus those of every algorithm; the sampling ones,
    num_envs_per_worker and train_batch_size, are unused: a worker runs one episode at a time)."""

    #: Numbers in the shared noise table (float32; built from the seed in every process).
    noise_table_size: int = 25_000_000
    #: Observation filter: "MeanStdFilter" (running mean/std, merged in perturbation order) or "NoFilter".
    observation_filter: str = "MeanStdFilter"
    #: Clip normalised observations to +-this (0: no clipping).
    filter_clip: float = 0.0
    #: Workers' forward pass: "numpy" (module.forward_inference on NumPy ops; faster for one
    #: observation) or "framework" (through the framework adapter).
    worker_forward: str = "numpy"
    #: Perturbations per task handed to a worker (0: about a quarter of a worker's share).
    chunk_size: int = 0
    #: Cut episodes after this many steps (0: the env's own time limit).
    max_episode_steps: int = 0
    #: No gradient clipping (there is no gradient to clip).
    grad_clip: float = 0.0

    def validate(self) -> None:
        # Not AlgorithmConfig.validate: its train_batch_size check is about sampling envs.
        for key in ("num_workers", "evaluation_num_episodes", "metrics_num_episodes_for_smoothing", "num_threads",
                    "noise_table_size"):
            if getattr(self, key) < 1:
                raise UnirlError(f"config key `{key}` must be at least 1, got {getattr(self, key)}.")
        if self.observation_filter not in ("MeanStdFilter", "NoFilter"):
            raise UnirlError(f"config key `observation_filter` must be \"MeanStdFilter\" or \"NoFilter\", "
                             f"got {self.observation_filter!r}.")
        if self.worker_forward not in ("numpy", "framework"):
            raise UnirlError(f"config key `worker_forward` must be \"numpy\" or \"framework\", got {self.worker_forward!r}.")
        if self.chunk_size < 0 or self.max_episode_steps < 0 or self.filter_clip < 0:
            raise UnirlError("config keys `chunk_size`, `max_episode_steps` and `filter_clip` must not be negative.")
        self.model_config()
        check_env_id(self.env)

    def model_config(self):
        # The policy may be linear (hidden_sizes []: ARS's policy).
        import dataclasses

        from unirl.config import unknown_key_error
        from unirl.models import ModelConfig

        valid = [f.name for f in dataclasses.fields(ModelConfig)]
        for key in self.model:
            if key not in valid:
                raise unknown_key_error(key, valid, where="model config")
        m = ModelConfig(**self.model)
        m.validate(allow_linear=True)
        return m


def centered_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks of x scaled to [-0.5, 0.5] (ties broken by position), same shape (Salimans et al.'s fitness shaping)."""
    flat = np.asarray(x).ravel()
    ranks = np.empty(len(flat), np.float32)
    ranks[np.argsort(flat, kind="stable")] = np.arange(len(flat), dtype=np.float32)
    if len(flat) < 2:
        return np.zeros(np.shape(x), np.float32)
    # float32 arithmetic, as in the paper's code (es_distributed/es.py): the same bits.
    ranks /= np.float32(len(flat) - 1)
    ranks -= np.float32(0.5)
    return ranks.reshape(np.shape(x))


class _FilteredPolicy:
    """A policy whose compute_actions normalises observations with a frozen (mean, std) first."""

    def __init__(self, policy, snapshot, clip: float):
        self.policy, self.snapshot, self.clip = policy, snapshot, clip
        self.dist = policy.dist

    def compute_actions(self, obs, noise=None, **explore):
        if self.snapshot is not None:
            obs = normalize(obs, *self.snapshot, self.clip)
        return self.policy.compute_actions(obs, noise, **explore)


class PopulationAlgorithm(Algorithm):
    """Shared by ES and ARS: the population pattern, the observation filter, the NumPy optimizer, checkpoints."""

    module_kind = "policy"
    loss = None
    config_class = PopulationConfig
    execution = loops.PopulationEvaluation()
    #: Keys of every algorithm that a population method does not use (the conformance config-keys check reads this).
    inert_config_keys = {
        "lr": "the step size is the algorithm's own key (ES stepsize, ARS step_size)",
        "lr_decay_timesteps": "the step size is the algorithm's own key (ES stepsize, ARS step_size)",
        "lr_schedule": "the step size is the algorithm's own key (ES stepsize, ARS step_size)",
        "grad_clip": "the update is a gradient estimate from returns, never clipped",
    }

    # -- to be provided ---------------------------------------------------------------------
    def make_optimizer(self):
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        raise NotImplementedError

    def perturbations_per_iteration(self) -> int:
        raise NotImplementedError

    def noise_stdev(self) -> float:
        raise NotImplementedError

    def estimate_gradient(self, result: dict, offsets: np.ndarray) -> tuple[np.ndarray, dict]:
        """(the gradient to descend, flat float32; stats) from the population's returns."""
        raise NotImplementedError

    # -- setup ------------------------------------------------------------------------------
    def initial_weights(self) -> np.ndarray:
        return self.policy.get_flat_weights()

    def setup(self) -> None:
        c = self.config
        obs_space, _ = spaces(c.env, c.env_config)
        self.use_filter = c.observation_filter == "MeanStdFilter"
        self.obs_filter = MeanStdFilter(obs_space.shape, clip=c.filter_clip, min_std=self.filter_min_std)
        self.dim = self.policy.layout.size
        if self.dim > c.noise_table_size:
            raise UnirlError(f"the noise table ({c.noise_table_size} numbers) is smaller than the policy "
                             f"({self.dim} parameters); raise `noise_table_size`.")
        self.table = noise_table(c.seed, c.noise_table_size)
        self.policy.set_flat_weights(self.initial_weights())
        self.opt = self.make_optimizer()
        self.opt_state = self.opt.init(numpy_ops, self.policy.get_flat_weights())
        super().setup()

    filter_min_std = 1e-8

    def filter_snapshot(self):
        return self.obs_filter.snapshot() if self.use_filter else None

    # -- hooks of the population pattern ------------------------------------------------------
    def learn(self, rows: dict, hp: dict) -> dict:
        """One step of the optimizer chain (NumPy) down rows["gradient"], the population's estimate."""
        grad = rows["gradient"]
        theta = self.policy.get_flat_weights()
        hp = {k: np.float32(v) for k, v in hp.items()}
        updates, self.opt_state = self.opt.update(numpy_ops, grad.astype(np.float32), self.opt_state, theta, hp)
        new_theta = (theta + updates).astype(np.float32)
        self.policy.set_flat_weights(new_theta)
        return {"grad_norm": float(np.linalg.norm(grad.astype(np.float64))),
                "update_ratio": float(np.linalg.norm(updates.astype(np.float64)) /
                                      max(np.linalg.norm(theta.astype(np.float64)), 1e-12)),
                "weights_norm": float(np.linalg.norm(new_theta.astype(np.float64)))}

    def after_samples(self) -> None:
        """Merge the population's observation statistics (in perturbation order) into the filter."""
        result = self.execution.last_result
        if self.use_filter:
            self.obs_filter.merge(RunningMeanStd.combine(result["obs_count"], result["obs_mean"], result["obs_m2"]))

    def training_step(self) -> dict:
        return dict(super().training_step(), filter_count=float(self.obs_filter.stats.count))

    # -- acting and evaluation (through the filter) -----------------------------------------------
    def acting(self):
        """The learner's policy behind the current observation filter (compute_actions(obs))."""
        return _FilteredPolicy(self.policy, self.filter_snapshot(), self.config.filter_clip)

    def compute_actions(self, obs: np.ndarray, explore: bool = False, seed: int = 0) -> np.ndarray:
        return self.acting().compute_actions(np.asarray(obs, np.float32))

    def evaluate(self, num_episodes: int | None = None) -> dict:
        n = self.evaluation_episodes(num_episodes)
        returns = evaluate_policy(self.acting(), self.config.env, self.config.env_config, n, self.config.seed)
        return {"evaluation/episode_return_mean": float(returns.mean()), "evaluation/episodes": n,
                "evaluation/episode_returns": returns.tolist(), "weights_digest": self.weights_digest()}

    # -- checkpoints: weights, optimizer state, filter, perturbation counter --------------------------
    def get_state(self) -> tuple[dict, dict]:
        arrays, state = super().get_state()
        arrays.update({f"opt/{k}": np.asarray(v) for k, v in tree_paths(self.opt_state)})
        arrays.update({f"filter/{k}": v for k, v in self.obs_filter.get_state().items()})
        return arrays, state

    def set_state(self, arrays: dict, state: dict) -> None:
        super().set_state(arrays, state)
        opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
        if opt:
            self.opt_state = tree_replace(self.opt_state, {k: np.asarray(v) for k, v in opt.items()})
        filt = {k[7:]: v for k, v in arrays.items() if k.startswith("filter/")}
        if filt:
            self.obs_filter.set_state(filt)


@dataclass
class ESConfig(PopulationConfig):
    """ES's options (Salimans et al. 2017; the defaults are tuned for classic-control tasks)."""

    #: Episodes per iteration: episodes_per_batch / 2 antithetic pairs (must be even).
    episodes_per_batch: int = 60
    #: Standard deviation sigma of the parameter noise.
    noise_stdev: float = 0.02
    #: Adam step size.
    stepsize: float = 0.02
    #: L2 weight decay coefficient (added to the gradient before Adam, as in the paper's code).
    l2_coeff: float = 0.005
    #: The policy network: two hidden layers of 32.
    model: dict = field(default_factory=lambda: {"hidden_sizes": [32, 32]})

    def validate(self) -> None:
        super().validate()
        if self.episodes_per_batch < 2 or self.episodes_per_batch % 2:
            raise UnirlError(f"config key `episodes_per_batch` must be an even number of at least 2 "
                             f"(antithetic pairs), got {self.episodes_per_batch}.")
        for key in ("noise_stdev", "stepsize"):
            if getattr(self, key) <= 0:
                raise UnirlError(f"config key `{key}` must be positive, got {getattr(self, key)}.")
        if self.l2_coeff < 0:
            raise UnirlError(f"config key `l2_coeff` must not be negative, got {self.l2_coeff}.")


class ES(PopulationAlgorithm):
    name = "ES"
    config_class = ESConfig
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "episodes_per_batch": 24, "noise_table_size": 1_000_000,
                    "model": {"hidden_sizes": [16]}},
        curve_config={"env": "CartPole-v1", "total_envs": 12, "episodes_per_batch": 24,
                      "noise_table_size": 1_000_000, "model": {"hidden_sizes": [16]}},
        learning={"config": {"env": "CartPole-v1", "noise_table_size": 5_000_000}, "score": 475.0,
                  "budget": 400_000, "eval_episodes": 20},
        has_loss=False,
        notes="no loss: level 4 compares forward passes and the (NumPy) update step",
    )

    def make_optimizer(self):
        return chain(add_decayed_weights(self.config.l2_coeff), adam())

    def hyperparameters(self) -> dict:
        return {"lr": self.config.stepsize}

    def perturbations_per_iteration(self) -> int:
        return self.config.episodes_per_batch // 2

    def noise_stdev(self) -> float:
        return self.config.noise_stdev

    filter_min_std = 0.1  # sqrt(1e-2), the floor on the variance in Salimans et al.'s code

    def estimate_gradient(self, result: dict, offsets: np.ndarray) -> tuple[np.ndarray, dict]:
        returns = result["returns"]
        shaped = centered_ranks(returns).astype(np.float64)
        g = weighted_noise_sum(self.table, offsets, shaped[:, 0] - shaped[:, 1], self.dim) / returns.size
        return (-g).astype(np.float32), {}
