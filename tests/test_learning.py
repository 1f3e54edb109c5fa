"""Learning: PPO with the default config solves CartPole-v1 (greedy mean >= 475 over 20 episodes) within 100k steps."""
import numpy as np
import pytest

import unirl


def train_until_solved(framework: str, seed: int, budget: int = 100_000):
    """Train; whenever the last 20 training episodes average >= 475, evaluate greedily. Returns (steps, eval mean)."""
    algo = unirl.build("PPO", {"env": "CartPole-v1", "framework": framework, "seed": seed})
    returns, best = [], (None, -np.inf)
    try:
        while algo.timesteps_total < budget:
            result = algo.train()
            returns.extend(result["episode_returns_this_iter"])
            if len(returns) >= 20 and np.mean(returns[-20:]) >= 475:
                ev = algo.evaluate(20)["evaluation/episode_return_mean"]
                best = max(best, (algo.timesteps_total, ev), key=lambda x: x[1])
                if ev >= 475:
                    return algo.timesteps_total, ev
        return best
    finally:
        algo.stop()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_torch_solves_cartpole(seed):
    steps, ev = train_until_solved("torch", seed)
    assert ev >= 475, f"seed {seed}: greedy mean {ev} after {steps} steps"
    assert steps <= 100_000
