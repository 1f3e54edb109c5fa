import gymnasium as gym
import numpy as np


class LineEnv(gym.Env):
    """Walk on a line with actions -1, 0, +1 (Discrete(3, start=-1)); +1 for reaching the goal."""

    def __init__(self, goal=3):
        self.action_space = gym.spaces.Discrete(3, start=-1)
        self.observation_space = gym.spaces.Box(-30, 30, (1,), np.float32)
        self.goal = goal

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.t = 0, 0
        return np.array([self.pos], np.float32), {}

    def step(self, action):
        a = int(action)
        if a not in (-1, 0, 1):
            raise ValueError(f"action {a} is outside Discrete(3, start=-1)")
        self.pos += a
        self.t += 1
        done = self.pos >= self.goal
        return np.array([self.pos], np.float32), (1.0 if done else -0.1), done, self.t >= 20, {}
