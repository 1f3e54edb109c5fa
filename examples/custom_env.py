"""Train PPO on an environment of your own, on any backend.

    python examples/custom_env.py                                  # local backend
    python examples/custom_env.py --backend multiprocessing --num-workers 2
    python examples/custom_env.py --backend ray --num-workers 2     # needs unirl[ray]

The env is a plain Gymnasium class in this file. unirl registers it (as
`unirl-custom/__main__.Corridor-v0`) and ships its registration to the workers, so worker processes,
Ray actors and MPI ranks build it without importing this script. The same seed gives the same
weights digest on every backend and with any number of workers.
"""
from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import unirl


class Corridor(gym.Env):
    """Walk right along a corridor of `length` cells; reward 1 at the end, -0.01 per step."""

    def __init__(self, length: int = 8):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)  # 0: left, 1: right

    def _obs(self):
        return np.array([self.pos / self.length, 1.0], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos, self.steps = 0, 0
        return self._obs(), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        self.steps += 1
        done = self.pos >= self.length
        return self._obs(), 1.0 if done else -0.01, done, self.steps >= 100, {}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="local")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--steps", type=int, default=20_000, help="env steps to train for")
    args = p.parse_args(argv)
    config = {"env": Corridor, "env_config": {"length": 8}, "backend": args.backend,
              "num_workers": args.num_workers, "num_envs_per_worker": 8 // args.num_workers, "seed": 0}
    with unirl.build("PPO", config) as algo:
        while (result := algo.train())["timesteps_total"] < args.steps:
            pass
        evaluation = algo.evaluate(5)
    print(f"{result['timesteps_total']} env steps on {args.backend}: greedy return "
          f"{evaluation['evaluation/episode_return_mean']:.2f}, weights digest {result['weights_digest']}")
    return {"result": result, "evaluation": evaluation}


if __name__ == "__main__":
    main()
