"""Observation and reward normalisation (config keys `normalize_observations`, `normalize_rewards`).

Where the statistics live, so that no number depends on how envs are split over workers:

- The learner keeps them (float64 `RunningMeanStd`, unirl.filters) and updates them from the
  batches it learns on, which are joined in global env order (`Algorithm.record_batch`): the same
  rows in the same order whatever the split.
- Observations are normalised inside the module (`(obs - mean) / sqrt(var + 1e-8)`, clipped to
  +-normalize_clip), with the frozen mean and std stored as float32 parameters of the module
  (`obs_norm/mean`, `obs_norm/std`, under stop_gradient, so the optimizer leaves them exactly as
  they are). They travel to the workers with the weights, are part of every weights digest and
  checkpoint, and acting, the learner's passes and evaluation all normalise alike. The learner
  writes the updated statistics into every parameter set at the end of each iteration, so a
  batch is learned on with the statistics it was sampled with.
- Rewards are scaled on the learner, before postprocessing: divided by the running std of each
  env's discounted return (as Stable-Baselines3's VecNormalize), clipped to +-normalize_clip.
  The per-env return accumulators are indexed by global env index, so this needs batches that
  span all envs (the sync patterns: PPO, A2C, DQN). Episode returns in the metrics stay raw.

The float64 statistics and the return accumulators are saved in checkpoints (arrays `norm/...`).
"""
from __future__ import annotations

import numpy as np

from unirl import sample_batch as sb
from unirl.errors import UnirlError
from unirl.filters import RunningMeanStd

OBS_MEAN = "obs_norm/mean"
OBS_STD = "obs_norm/std"
EPS = 1e-8


class Normalizers:
    """The learner's running statistics for observations and returns."""

    def __init__(self, config, policy):
        self.obs_on = bool(getattr(config, "normalize_observations", False))
        self.rew_on = bool(getattr(config, "normalize_rewards", False))
        self.clip = float(getattr(config, "normalize_clip", 10.0))
        self.gamma = float(config.gamma)
        self.num_envs = int(config.num_envs)
        self.policy = policy
        self.obs_rms = None
        if self.obs_on:
            if OBS_MEAN not in policy.layout.shapes:
                raise UnirlError("normalize_observations needs a module with observation statistics "
                                 "(actor-critic or Q modules; ES and ARS keep their own observation filter).")
            self.obs_rms = RunningMeanStd(policy.layout.shapes[OBS_MEAN])
        self.ret_rms = RunningMeanStd(())
        self.returns = np.zeros(self.num_envs, np.float64)
        self._pending = False

    @property
    def active(self) -> bool:
        return self.obs_on or self.rew_on

    def process(self, batch) -> None:
        """Update the statistics from a joined batch (in env order); scale its rewards in place."""
        if self.obs_on and sb.OBS in batch:
            obs = np.asarray(batch[sb.OBS])
            self.obs_rms.update(obs.reshape((-1,) + self.obs_rms.shape))
            self._pending = True
        if self.rew_on and sb.REWARDS in batch:
            rewards = np.asarray(batch[sb.REWARDS], np.float64)
            if rewards.ndim != 2 or rewards.shape[1] != self.num_envs:
                raise UnirlError("normalize_rewards needs batches over all envs in global order "
                                 "(the synchronous patterns: PPO, A2C, DQN).")
            dones = np.asarray(batch[sb.TERMINATEDS]) | np.asarray(batch[sb.TRUNCATEDS])
            seen = np.empty_like(rewards)
            for t in range(len(rewards)):
                self.returns = self.returns * self.gamma + rewards[t]
                seen[t] = self.returns
                self.returns[dones[t]] = 0.0
            self.ret_rms.update(seen.reshape(-1))
            scale = np.sqrt(self.ret_rms.var + EPS)
            batch[sb.REWARDS] = np.clip(rewards / scale, -self.clip, self.clip).astype(np.float32)

    def obs_snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) as the module uses them, float32."""
        return (self.obs_rms.mean.astype(np.float32),
                np.sqrt(self.obs_rms.var + EPS).astype(np.float32))

    def sync(self) -> None:
        """Write pending observation statistics into every parameter set of the policy."""
        if not self._pending:
            return
        mean, std = self.obs_snapshot()
        for name in self.policy.param_sets:
            weights = self.policy.get_weights(name)
            weights[OBS_MEAN], weights[OBS_STD] = mean, std
            self.policy.set_weights(weights, name)
        self._pending = False

    def get_state(self) -> dict[str, np.ndarray]:
        out = {"norm/returns": self.returns.copy()}
        out.update({f"norm/ret/{k}": v for k, v in self.ret_rms.get_state().items()})
        if self.obs_rms is not None:
            out.update({f"norm/obs/{k}": v for k, v in self.obs_rms.get_state().items()})
        return out

    def set_state(self, arrays: dict) -> None:
        if "norm/returns" in arrays:
            self.returns = np.array(arrays["norm/returns"], np.float64)
            self.ret_rms.set_state({k: arrays[f"norm/ret/{k}"] for k in ("count", "mean", "m2")})
        if self.obs_rms is not None and "norm/obs/count" in arrays:
            self.obs_rms.set_state({k: arrays[f"norm/obs/{k}"] for k in ("count", "mean", "m2")})
