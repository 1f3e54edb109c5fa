"""SAC on Pendulum-v1: unirl vs Stable-Baselines3 (rl-zoo's Pendulum settings): wall time and env steps until the
mean of the last 10 training episodes first reaches -200, env steps/s and the greedy mean, in one run.

    python benchmarks/sac_vs_sb3.py --seeds 0 1 2 [--config JSON_OR_FILE] [--json FILE]

Needs the `bench` extra (stable-baselines3). SB3 runs rl-zoo's Pendulum-v1 SAC (MlpPolicy, lr 1e-3, the rest
SB3's defaults: buffer 1e6, batch 256, tau 0.005, gamma 0.99, learning_starts 100, one gradient step per env
step, automatic entropy coefficient, [256, 256]); unirl runs the config given (default: SAC's defaults with
lr 1e-3, i.e. the same settings, on torch). Each library runs one intra-op thread, each run in a fresh process of
its own (SB3's without unirl's kernel pins); the clock starts when the algorithm object is built (imports and
one short warm-up run of each library excluded) and stops where the criterion is first met, or at the budget.
"""
from __future__ import annotations

import json
import statistics
import time

import numpy as np

from unirl.benchmarks.ppo_vs_sb3 import (comparison_args, run_comparison, sb3_greedy_mean,
                                          sb3_stop_callback, train_until_target, write_records)

TARGET, WINDOW = -200.0, 10
DEFAULT_CONFIG = {"env": "Pendulum-v1", "lr": 1e-3}


def record(library, seed, hit, steps, wall, cpu, returns, greedy) -> dict:
    return {"library": library, "seed": seed, "wall_s_to_target": hit[0] if hit else None,
            "steps_to_target": hit[1] if hit else None, "cpu_s_to_target": hit[2] if hit else None,
            "steps": steps, "wall_s": wall, "cpu_s": cpu, "env_steps_per_s": steps / wall,
            "last10_mean": float(np.mean(returns[-WINDOW:])) if returns else None, "greedy_mean_10": greedy}


def run_sb3(seed: int, budget: int) -> dict:
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), time.process_time()
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=seed)
    model = SAC("MlpPolicy", env, learning_rate=1e-3, seed=seed, device="cpu", verbose=0)
    cb = sb3_stop_callback(t0, c0, TARGET, WINDOW)
    model.learn(total_timesteps=budget, callback=cb)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return record("sb3", seed, cb.hit, model.num_timesteps, wall, cpu, cb.returns, sb3_greedy_mean(model, "Pendulum-v1", seed, 10))


def run_unirl(seed: int, budget: int, config: dict) -> dict:
    import unirl

    t0, c0 = time.perf_counter(), time.process_time()
    algo = unirl.build("SAC", dict(config, seed=seed))
    try:
        hit, returns = train_until_target(algo, budget, t0, c0, TARGET, WINDOW)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        steps = algo.timesteps_total
        greedy = algo.evaluate(10)["evaluation/episode_return_mean"]
    finally:
        algo.stop()
    return record("unirl", seed, hit, steps, wall, cpu, returns, greedy)


def warm_up(library: str, config: dict) -> None:
    """One short untimed run (lazy initialisation and compilation are not charged to the timed run)."""
    if library == "unirl":
        run_unirl(123, 400, config)
    else:
        run_sb3(123, 300)


def main(argv=None) -> int:
    args, config = comparison_args(__doc__.splitlines()[0], argv, 20_000, json.dumps(DEFAULT_CONFIG))
    records = run_comparison(__file__, args, config, warm_up, run_sb3, run_unirl)
    if isinstance(records, int):
        return records
    summary = {}
    for lib in ("sb3", "unirl"):
        rows = [r for r in records if r["library"] == lib]
        hits = [r["wall_s_to_target"] for r in rows if r["wall_s_to_target"] is not None]
        if rows:
            summary[lib] = {"reached": f"{len(hits)}/{len(rows)}",
                            "median_wall_s_to_target": statistics.median(hits) if hits else None,
                            "median_env_steps_per_s": statistics.median(r["env_steps_per_s"] for r in rows),
                            "greedy_means": [r["greedy_mean_10"] for r in rows]}
    if "sb3" in summary and "unirl" in summary and summary["unirl"]["median_wall_s_to_target"]:
        summary["speedup_median_wall"] = (summary["sb3"]["median_wall_s_to_target"]
                                          / summary["unirl"]["median_wall_s_to_target"])
    print(json.dumps(summary, indent=1))
    write_records(args.json, records, summary, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
