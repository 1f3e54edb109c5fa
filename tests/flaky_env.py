"""A CartPole whose `step` raises once when a flag file exists (the test creates it; the env deletes it)."""
import os

import gymnasium as gym
from gymnasium.envs.classic_control.cartpole import CartPoleEnv


class FlakyCartPole(CartPoleEnv):
    def __init__(self, flag_file: str = "", **kwargs):
        super().__init__(**kwargs)
        self.flag_file = flag_file

    def step(self, action):
        if self.flag_file and os.path.exists(self.flag_file):
            try:
                os.unlink(self.flag_file)
            except FileNotFoundError:
                pass
            else:
                raise RuntimeError("injected env failure")
        return super().step(action)


if "FlakyCartPole-v1" not in gym.registry:
    gym.register("FlakyCartPole-v1", entry_point=FlakyCartPole, max_episode_steps=500)
