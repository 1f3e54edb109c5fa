"""DQN on CartPole-v1: unirl vs Stable-Baselines3 (rl-zoo hyperparameters): wall time and env steps until
the mean of the last 20 training episodes reaches 475, env steps/s and the greedy mean, in one run.

    python benchmarks/dqn_vs_sb3.py --seeds 0 1 2 [--config benchmarks/configs/dqn_cartpole.json] [--json FILE]

Needs the `bench` extra (stable-baselines3). SB3 runs the rl-zoo CartPole-v1 settings (50k steps,
lr 2.3e-3, batch 64, buffer 100k, learning_starts 1000, target update 10, train_freq 256,
gradient_steps 128, exploration 0.16 -> 0.04, net [256, 256]); unirl runs the JSON config given
(default: benchmarks/configs/dqn_cartpole.json, which runs JAX; SB3 runs torch). Each library runs
one intra-op thread, each run
in a fresh process of its own (SB3's without unirl's kernel pins); the clock starts when the algorithm object is built (imports and one short warm-up run of each library
excluded) and stops where the criterion is first met (SB3: at that env step; unirl: at the end of
that iteration), or at the step budget. CPU seconds of the process are recorded beside wall
seconds: on a shared machine they stand for the wall time of a free one (every side runs one thread). The greedy mean (20 episodes, argmax actions) is measured
after the clock stops, on the weights at that point.
"""
from __future__ import annotations

import json
import os
import statistics
import time

import numpy as np

from unirl.benchmarks.ppo_vs_sb3 import (TARGET, WINDOW, comparison_args, run_comparison, sb3_greedy_mean,
                                          sb3_stop_callback, train_until_target, write_records)
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "configs", "dqn_cartpole.json")


def run_sb3(seed: int, budget: int) -> dict:
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)

    t0, c0 = time.perf_counter(), time.process_time()
    env = make_vec_env("CartPole-v1", n_envs=1, seed=seed)
    model = DQN("MlpPolicy", env, learning_rate=2.3e-3, batch_size=64, buffer_size=100_000, learning_starts=1000,
                gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128,
                exploration_fraction=0.16, exploration_final_eps=0.04, policy_kwargs={"net_arch": [256, 256]},
                seed=seed, device="cpu", verbose=0)
    cb = sb3_stop_callback(t0, c0)
    model.learn(total_timesteps=budget, callback=cb)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    steps = model.num_timesteps
    return {"library": "sb3", "seed": seed, "wall_s_to_475": cb.hit[0] if cb.hit else None,
            "steps_to_475": cb.hit[1] if cb.hit else None, "cpu_s_to_475": cb.hit[2] if cb.hit else None,
            "steps": steps, "wall_s": wall, "cpu_s": cpu,
            "env_steps_per_s": steps / wall, "last20_mean": float(np.mean(cb.returns[-WINDOW:])),
            "greedy_mean_20": sb3_greedy_mean(model, "CartPole-v1", seed, 20)}


def run_unirl(seed: int, budget: int, config: dict) -> dict:
    import unirl

    t0, c0 = time.perf_counter(), time.process_time()
    algo = unirl.build("DQN", dict(config, seed=seed))
    try:
        hit, returns = train_until_target(algo, budget, t0, c0)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        steps = algo.timesteps_total
        greedy = algo.evaluate(20)["evaluation/episode_return_mean"]
    finally:
        algo.stop()
    return {"library": "unirl", "seed": seed, "wall_s_to_475": hit[0] if hit else None,
            "steps_to_475": hit[1] if hit else None, "cpu_s_to_475": hit[2] if hit else None,
            "steps": steps, "wall_s": wall, "cpu_s": cpu,
            "env_steps_per_s": steps / wall, "last20_mean": float(np.mean(returns[-WINDOW:])),
            "greedy_mean_20": greedy}


def warm_up(library: str, config: dict) -> None:
    """One short untimed run (lazy initialisation is not charged to the timed run)."""
    if library == "unirl":
        run_unirl(123, 2000, config)
    else:
        run_sb3(123, 1500)


def main(argv=None) -> int:
    args, config = comparison_args(__doc__.splitlines()[0], argv, 50_000, DEFAULT_CONFIG)
    records = run_comparison(__file__, args, config, warm_up, run_sb3, run_unirl)
    if isinstance(records, int):
        return records
    summary = {}
    for lib in ("sb3", "unirl"):
        rows = [r for r in records if r["library"] == lib]
        if rows:
            hits = [r["wall_s_to_475"] for r in rows if r["wall_s_to_475"] is not None]
            summary[lib] = {"reached_475": f"{len(hits)}/{len(rows)}",
                            "median_wall_s_to_475": statistics.median(hits) if hits else None,
                            "median_cpu_s_to_475": statistics.median(r["cpu_s_to_475"] for r in rows
                                                                     if r["cpu_s_to_475"] is not None) if hits else None,
                            "median_env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in rows),
                            "greedy_means": [r["greedy_mean_20"] for r in rows]}
    print(json.dumps(summary, indent=1))
    write_records(args.json, records, summary, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
