"""Small PettingZoo envs for the multi-agent tests: agents that leave early, and one that never shows up."""
import functools

import gymnasium as gym
import numpy as np
from pettingzoo import ParallelEnv


class Race(ParallelEnv):
    """Two runners on a line: action 1 moves one step (reward 1), action 0 stays (reward 0). `fast` finishes (is
    terminated) at position 2, `slow` at 4; the episode is truncated after 6 steps. `ghost` is a possible agent
    that joins only when `with_ghost` is set, and then never acts."""

    metadata = {"name": "race_v0"}

    def __init__(self, with_ghost: bool = False):
        self.possible_agents = ["fast", "slow"] + (["ghost"] if with_ghost else [])
        self.goal = {"fast": 2, "slow": 4, "ghost": 1}

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent):
        return gym.spaces.Box(0, 10, (2,), np.float32)

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent):
        return gym.spaces.Discrete(2)

    def _obs(self, a):
        return np.array([self.pos[a], self.t], np.float32)

    def reset(self, seed=None, options=None):
        self.agents = ["fast", "slow"]
        self.pos = dict.fromkeys(self.possible_agents, 0)
        self.t = 0
        return {a: self._obs(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        rewards, terms, truncs = {}, {}, {}
        for a in self.agents:
            self.pos[a] += int(actions[a])
            rewards[a] = float(actions[a])
            terms[a] = self.pos[a] >= self.goal[a]
            truncs[a] = self.t >= 6 and not terms[a]
        obs = {a: self._obs(a) for a in self.agents}
        infos = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


def race(**kwargs):
    return Race(**kwargs)
