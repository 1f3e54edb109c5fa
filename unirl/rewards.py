"""Envs' reward and termination functions in NumPy, for planning against a learned model (unirl.planning).

reward(obs [B, d], action [B, A] in the env's units, next_obs [B, d]) -> [B]; termination(next_obs) -> [B] bool.
Each is the env's own formula, written from the env's source (Gymnasium 1.x), so a planner scores imagined
transitions as the env would score real ones. `reward_functions(env_id)` looks one up; for an env without one, config
keys `reward_fn` (and `termination_fn`) name functions of the same signatures ("module:function"), or the model
learns the reward (a reward head, unirl.dynamics).
"""
from __future__ import annotations

import numpy as np

from unirl.errors import UnirlError


def pendulum_reward(obs, action, next_obs):
    """Pendulum-v1: -(theta^2 + 0.1 theta_dot^2 + 0.001 u^2), theta in [-pi, pi) from the state *before* the
    step (obs = [cos theta, sin theta, theta_dot]), u clipped to [-2, 2]."""
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    u = np.clip(action[:, 0], -2.0, 2.0)
    return -(theta ** 2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u ** 2)


def inverted_pendulum_termination(next_obs):
    """InvertedPendulum-v5 ends when the pole leaves +-0.2 rad (next_obs[1]) or the state is not finite."""
    return ~np.isfinite(next_obs).all(axis=1) | (np.abs(next_obs[:, 1]) > 0.2)


def inverted_pendulum_reward(obs, action, next_obs):
    """InvertedPendulum-v5: 1 for every step that does not end the episode."""
    return 1.0 - inverted_pendulum_termination(next_obs).astype(np.float64)


def mountain_car_termination(next_obs):
    """MountainCarContinuous-v0 ends at the goal: position >= 0.45 with velocity >= 0."""
    return (next_obs[:, 0] >= 0.45) & (next_obs[:, 1] >= 0.0)


def mountain_car_reward(obs, action, next_obs):
    """MountainCarContinuous-v0: 100 on reaching the goal, minus 0.1 u^2."""
    return 100.0 * mountain_car_termination(next_obs) - 0.1 * action[:, 0].astype(np.float64) ** 2


def hopper_termination(next_obs):
    """Hopper-v5 ends when unhealthy: height next_obs[0] <= 0.7, torso angle next_obs[1] outside (-0.2, 0.2), or
    any of next_obs[1:] outside (-100, 100) (the env checks the unclipped velocities; the observation's are
    clipped to +-10, so that last test sees positions only)."""
    healthy = ((next_obs[:, 0] > 0.7) & (np.abs(next_obs[:, 1]) < 0.2)
               & np.all(np.abs(next_obs[:, 1:]) < 100.0, axis=1) & np.isfinite(next_obs).all(axis=1))
    return ~healthy


def hopper_reward(obs, action, next_obs):
    """Hopper-v5, approximately: 1 (alive) + the forward velocity - 0.001 |a|^2. The env's forward term is the
    torso's displacement over the step divided by dt, which the observation does not hold; the velocity at the
    step's end (next_obs[5], qvel[0]) stands for it."""
    return 1.0 + next_obs[:, 5].astype(np.float64) - 1e-3 * np.sum(np.asarray(action, np.float64) ** 2, axis=1)


#: env id -> (reward, termination or None).
ENV_FUNCTIONS = {
    "Pendulum-v1": (pendulum_reward, None),
    "InvertedPendulum-v5": (inverted_pendulum_reward, inverted_pendulum_termination),
    "InvertedPendulum-v4": (inverted_pendulum_reward, inverted_pendulum_termination),
    "MountainCarContinuous-v0": (mountain_car_reward, mountain_car_termination),
    "Hopper-v5": (hopper_reward, hopper_termination),
}


def reward_functions(env: str, reward_fn: str = "", termination_fn: str = "", learn_reward: bool | None = None):
    """(reward or None, termination or None) for env: the functions config keys `reward_fn` / `termination_fn` name
    ("module:function"), else the env's own from ENV_FUNCTIONS. The reward is None (the model learns it) when
    `learn_reward` is True, or None and there is no function; with `learn_reward` False an env without one is a
    one-sentence error."""
    from unirl.loading import import_attr

    known = ENV_FUNCTIONS.get(env if isinstance(env, str) else "", (None, None))
    reward = import_attr(reward_fn, "reward function", reward_fn) if reward_fn else known[0]
    termination = import_attr(termination_fn, "termination function", termination_fn) if termination_fn else known[1]
    if learn_reward:
        return None, termination
    if reward is None and learn_reward is not None:
        raise UnirlError(f"planning with the env's reward needs its reward function, and unirl has none for `{env}` "
                         f"(it has {', '.join(sorted(ENV_FUNCTIONS))}); set config key `reward_fn` to "
                         "\"module:function\", a function reward(obs, action, next_obs) -> rewards of NumPy batches, "
                         "or let the model learn the reward (`learn_reward`: null or true).")
    return reward, termination
