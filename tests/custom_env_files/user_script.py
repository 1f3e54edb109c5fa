import json
import sys

import gymnasium as gym
import numpy as np

import unirl


class LineEnv(gym.Env):
    """The same walk, defined in the user's script (__main__)."""

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


def make_line(goal=3):
    return LineEnv(goal)


backend, modes = sys.argv[1], sys.argv[2].split(",")
gym.register("LineWalk-v0", entry_point=LineEnv)
gym.register("LineWalkStr-v0", entry_point="__main__:LineEnv")
envs = {"registered": "LineWalk-v0", "registered_str": "LineWalkStr-v0", "class": LineEnv, "function": make_line,
        "module": "line_env_module:LineEnv"}
out = {}
for mode in modes:
    cfg = {"env": envs[mode], "env_config": {"goal": 2}, "backend": backend, "num_workers": 2,
           "num_envs_per_worker": 2, "train_batch_size": 64, "minibatch_size": 32, "num_epochs": 2}
    with unirl.build("PPO", cfg) as algo:
        for _ in range(3):
            r = algo.train()
        ev = algo.evaluate(2)
    out[mode] = {"digest": r["weights_digest"], "episodes": r["episodes_total"],
                 "returns": r["episode_returns_this_iter"], "eval": ev["evaluation/episode_return_mean"]}
print("RESULT " + json.dumps(out))
