"""Partially observed versions of Gymnasium envs, for memory (recurrent policies): `unirl/StatelessCartPole-v1`.

CartPole-v1 with the velocities hidden: the agent sees the cart's position and the pole's angle only,
so a feed-forward policy cannot tell which way the pole moves (it scores ~40-50) and a policy with
memory can estimate the velocities from consecutive observations and solve it (500).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np


class KeepObservation(gym.ObservationWrapper):
    """Observations restricted to the entries `keep` of a flat Box observation."""

    def __init__(self, env: gym.Env, keep):
        super().__init__(env)
        self.keep = np.asarray(keep, np.int64)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation):
        return np.asarray(observation)[self.keep]


def stateless_cartpole(**kwargs) -> gym.Env:
    """CartPole-v1 observing (cart position, pole angle): entries 0 and 2 of the full state."""
    return KeepObservation(gym.make("CartPole-v1", **kwargs), [0, 2])


ENVS = {"unirl/StatelessCartPole-v1": stateless_cartpole}


def register() -> None:
    for env_id, creator in ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=creator)


register()
