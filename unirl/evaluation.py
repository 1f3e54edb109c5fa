"""Greedy evaluation: K episodes, env k seeded from (seed, k), run to their first end."""
from __future__ import annotations

import numpy as np

from unirl import seeding
from unirl.env import make_vector_env


def evaluate_policy(policy, env_id: str, env_config: dict | None, num_episodes: int, seed: int,
                    max_parallel: int = 32) -> np.ndarray:
    """Returns of `num_episodes` greedy episodes, in episode order."""
    returns = np.zeros(num_episodes, np.float64)
    for start in range(0, num_episodes, max_parallel):
        n = min(max_parallel, num_episodes - start)
        envs = make_vector_env(env_id, n, env_config)
        try:
            obs, _ = envs.reset(seed=[seeding.env_reset_seed(seed, start + i, seeding.EVALUATION)
                                      for i in range(n)])
            running = np.ones(n, bool)
            # a module that carries a state from step to step (memory, a plan) acts from each env's own
            shape = getattr(getattr(policy, "module", None), "acting_state_shape", None)
            state = None if shape is None else np.zeros((n,) + tuple(shape), np.float32)
            while running.any():
                if state is None:
                    actions = policy.compute_actions(np.asarray(obs, np.float32))
                else:
                    a, _, state = policy.act(np.asarray(obs, np.float32), None, state)
                    actions = policy.dist.env_actions(a)
                obs, r, term, trunc, _ = envs.step(actions)
                returns[start:start + n] += np.where(running, r, 0.0)
                running &= ~(term | trunc)
        finally:
            envs.close()
    return returns
