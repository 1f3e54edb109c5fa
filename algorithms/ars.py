"""Augmented Random Search (Mania et al. 2018): a linear policy, antithetic directions, the top-b of them, V1 and V2.

Per iteration, N directions delta_k (slices of the shared noise table) are evaluated as
M + nu * delta_k and M - nu * delta_k; the b directions with the largest max(r+, r-) give the step

    M <- M + alpha / (b * sigma_R) * sum_k (r_k+ - r_k-) delta_k

where sigma_R is the standard deviation of those 2b returns. V2 ("ARS-V2", `version: 2`) also
normalises states with a running mean and standard deviation of every state seen (merged in
direction order); V1 acts on raw states. The policy is the neutral model with no hidden layer
(`hidden_sizes: []`), started at zero as in the paper. The step is the neutral optimizer
chain's plain SGD, on the NumPy ops. Like ES (whose population machinery this shares), ARS is
bit-identical across backends and worker counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from unirl.algorithms.es import PopulationAlgorithm, PopulationConfig
from unirl.conformance_spec import ConformanceSpec
from unirl.errors import UnirlError
from unirl.execution.population import weighted_noise_sum
from unirl.optim import chain, sgd


@dataclass
class ARSConfig(PopulationConfig):
    """ARS's options (the defaults solve CartPole-v1; the paper's per-task values for MuJoCo differ)."""

    #: 1: raw states (ARS V1); 2: states normalised by running mean and std (ARS V2).
    version: int = 2
    #: Directions N sampled per iteration (2N episodes).
    num_directions: int = 8
    #: Directions b kept for the update (the top b by max(r+, r-)); 0: all N.
    top_directions: int = 4
    #: Step size alpha.
    step_size: float = 0.02
    #: Exploration noise nu (std of the parameter perturbation).
    delta_std: float = 0.03
    #: Start from zero weights (the paper's choice) instead of the model's initialisation.
    zero_init: bool = True
    #: The linear policy: no hidden layer.
    model: dict = field(default_factory=lambda: {"hidden_sizes": []})
    #: Set from `version` (V1: "NoFilter", V2: "MeanStdFilter").
    observation_filter: str = ""

    def validate(self) -> None:
        if self.version not in (1, 2):
            raise UnirlError(f"config key `version` must be 1 or 2 (ARS V1 or V2), got {self.version}.")
        expected = "MeanStdFilter" if self.version == 2 else "NoFilter"
        if self.observation_filter and self.observation_filter != expected:
            raise UnirlError(f"ARS V{self.version} uses observation_filter {expected!r}, got {self.observation_filter!r}; "
                             "leave it out and choose `version`.")
        self.observation_filter = expected
        super().validate()
        if self.num_directions < 1:
            raise UnirlError(f"config key `num_directions` must be at least 1, got {self.num_directions}.")
        if not 0 <= self.top_directions <= self.num_directions:
            raise UnirlError(f"config key `top_directions` must lie in [0, num_directions={self.num_directions}], "
                             f"got {self.top_directions}.")
        for key in ("step_size", "delta_std"):
            if getattr(self, key) <= 0:
                raise UnirlError(f"config key `{key}` must be positive, got {getattr(self, key)}.")


def top_directions(returns: np.ndarray, b: int) -> np.ndarray:
    """Indices (ascending) of the b rows of returns [N, 2] with the largest max(r+, r-); ties go to the lower index."""
    order = np.argsort(-returns.max(axis=1), kind="stable")
    return np.sort(order[:b])


class ARS(PopulationAlgorithm):
    name = "ARS"
    config_class = ARSConfig
    conformance = ConformanceSpec(
        run_config={"env": "CartPole-v1", "total_envs": 12, "num_directions": 12, "top_directions": 6,
                    "noise_table_size": 100_000},
        curve_config={"env": "CartPole-v1", "total_envs": 12, "num_directions": 12, "top_directions": 6,
                      "noise_table_size": 100_000},
        learning={"config": {"env": "CartPole-v1", "noise_table_size": 100_000}, "score": 475.0,
                  "budget": 200_000, "eval_episodes": 20},
        has_loss=False,
        notes="no loss: level 4 compares forward passes and the (NumPy) update step",
    )

    inert_config_keys = {"version": "validate() turns it into observation_filter (V2: MeanStdFilter)"}

    def initial_weights(self) -> np.ndarray:
        if self.config.zero_init:
            return np.zeros(self.policy.layout.size, np.float32)
        return super().initial_weights()

    def make_optimizer(self):
        return chain(sgd())

    def hyperparameters(self) -> dict:
        return {"lr": self.config.step_size}

    def perturbations_per_iteration(self) -> int:
        return self.config.num_directions

    def noise_stdev(self) -> float:
        return self.config.delta_std

    def estimate_gradient(self, result: dict, offsets: np.ndarray) -> tuple[np.ndarray, dict]:
        returns = result["returns"]
        b = self.config.top_directions or len(returns)
        keep = top_directions(returns, b)
        kept = returns[keep]
        sigma_r = float(kept.std())
        if sigma_r < 1e-8:  # every kept return equal: r+ - r- is 0 anyway
            sigma_r = 1.0
        step = weighted_noise_sum(self.table, offsets[keep], kept[:, 0] - kept[:, 1], self.dim) / (b * sigma_r)
        return (-step).astype(np.float32), {"reward_std": sigma_r}
