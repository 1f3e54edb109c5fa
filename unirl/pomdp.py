"""Partially observed versions of Gymnasium envs, for memory (recurrent policies): `unirl/StatelessCartPole-v1`; and
the previous action and reward as inputs (`PreviousActionReward`, env_config key `prev_action_reward`).

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


class PreviousActionReward(gym.ObservationWrapper):
    """Each observation followed by the previous action (one-hot for Discrete actions, the action itself for Box
    ones) and the previous reward, zeros at an episode's first step (R2D2's and RLlib's `lstm_use_prev_action` /
    `lstm_use_prev_reward` inputs).

    As part of the observation they reach every module (recurrent or not) through its torso, and every
    computation that stores or replays observations (batches, sequences, burn-in, checkpoints, evaluation) sees
    the same inputs the actor saw, by construction. Turned on by env_config `{"prev_action_reward": true}`
    (unirl.env pops the key); flat (1-D) observations without an action mask only."""

    def __init__(self, env: gym.Env):
        from unirl.errors import UnirlError
        from unirl.spaces import FlatDict

        super().__init__(env)
        space, act = env.observation_space, env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1 or \
                (isinstance(space, FlatDict) and space.mask_size):
            raise UnirlError(f"env_config `prev_action_reward` appends the previous action and reward to flat "
                             f"observations without an action mask; this env observes {space}.")
        if isinstance(act, gym.spaces.Discrete):
            self.action_size, low_a, high_a = int(act.n), np.zeros(int(act.n)), np.ones(int(act.n))
        elif isinstance(act, gym.spaces.Box):
            self.action_size = int(np.prod(act.shape))
            low_a, high_a = np.ravel(act.low), np.ravel(act.high)
        else:
            raise UnirlError(f"env_config `prev_action_reward` takes Discrete or Box actions; this env's are {act}.")
        self.observation_space = gym.spaces.Box(
            np.concatenate([space.low, low_a, [-np.inf]]).astype(np.float32),
            np.concatenate([space.high, high_a, [np.inf]]).astype(np.float32), dtype=np.float32)
        self._last = np.zeros(self.action_size + 1, np.float32)

    def reset(self, **kwargs):
        self._last = np.zeros(self.action_size + 1, np.float32)
        return super().reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        last = np.zeros(self.action_size + 1, np.float32)
        if isinstance(self.env.action_space, gym.spaces.Discrete):
            last[int(action) - int(self.env.action_space.start)] = 1.0
        else:
            last[:self.action_size] = np.ravel(np.asarray(action, np.float32))
        last[-1] = np.float32(reward)
        self._last = last
        return self.observation(obs), reward, terminated, truncated, info

    def observation(self, observation):
        return np.concatenate([np.asarray(observation, np.float32).ravel(), self._last])


def stateless_cartpole(**kwargs) -> gym.Env:
    """CartPole-v1 observing (cart position, pole angle): entries 0 and 2 of the full state."""
    return KeepObservation(gym.make("CartPole-v1", **kwargs), [0, 2])


ENVS = {"unirl/StatelessCartPole-v1": stateless_cartpole}


def register() -> None:
    for env_id, creator in ENVS.items():
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=creator)


register()
