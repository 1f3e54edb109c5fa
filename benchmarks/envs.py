"""Learning benchmarks on real environments: PPO on Pendulum, LunarLander and MinAtar Breakout; SAC on HalfCheetah.

    python -m benchmarks.envs pendulum          # PPO, 200k steps (about 2 minutes here)
    python -m benchmarks.envs lunarlander       # PPO, 1M steps
    python -m benchmarks.envs breakout --steps 5000000
    python -m benchmarks.envs halfcheetah-sac --json hc.json --png hc.png   # SAC, 300k steps, greedy eval every 25k

Prints one line per iteration (steps, mean return of the last 100 episodes, wall time) and a
final greedy evaluation. The configs below are the ones the numbers in docs/envs.md come from.
"""
from __future__ import annotations

import argparse
import json
import time

#: rl-zoo's PPO hyperparameters for Pendulum-v1 (gamma 0.9, lambda 0.95, 4 envs x 1024 steps,
#: 10 epochs of minibatch 64, lr 1e-3), without gSDE.
PENDULUM_PPO = {"env": "Pendulum-v1", "num_envs_per_worker": 4, "train_batch_size": 4096, "minibatch_size": 64,
                "num_epochs": 10, "gamma": 0.9, "gae_lambda": 0.95, "lr": 1e-3, "lr_decay_timesteps": 0,
                "entropy_coeff": 0.0, "clip_param": 0.2, "grad_clip": 0.5,
                "model": {"hidden_sizes": [64, 64], "activation": "tanh"}}

#: rl-zoo's PPO for LunarLander (4 epochs of minibatch 64, gamma 0.999, lambda 0.98, ent 0.01) with 16 envs x 512
#: steps instead of 1024 (twice the updates: 200 first at 754k steps instead of 1.016M here).
LUNARLANDER_PPO = {"env": "LunarLander-v3", "num_envs_per_worker": 16, "train_batch_size": 8192,
                   "minibatch_size": 64, "num_epochs": 4, "gamma": 0.999, "gae_lambda": 0.98, "lr": 3e-4,
                   "lr_decay_timesteps": 0, "entropy_coeff": 0.01, "clip_param": 0.2, "grad_clip": 0.5,
                   "model": {"hidden_sizes": [64, 64], "activation": "tanh"}}

#: PPO on MinAtar Breakout (the small CNN, a shared 128-unit torso), close to PureJaxRL's MinAtar PPO:
#: 16 envs x 128 steps, 4 epochs of 8 minibatches, lr 5e-4.
BREAKOUT_PPO = {"env": "MinAtar/Breakout-v1", "num_envs_per_worker": 16, "train_batch_size": 2048,
                "minibatch_size": 256, "num_epochs": 4, "gamma": 0.99, "gae_lambda": 0.95, "lr": 5e-4,
                "lr_decay_timesteps": 0, "entropy_coeff": 0.01, "clip_param": 0.2, "grad_clip": 0.5,
                "model": {"hidden_sizes": [128], "activation": "relu", "vf_share_layers": True}}

#: SAC on MuJoCo HalfCheetah-v5 with the common settings (SB3, CleanRL): [256, 256], lr 3e-4, batch 256, tau 0.005,
#: one gradient step per env step, 5k uniform random steps first, on JAX (the fastest learner here).
HALFCHEETAH_SAC = {"env": "HalfCheetah-v5", "framework": "jax", "learning_starts": 5000}

#: name -> (algorithm, config, env steps, greedy evaluation every this many env steps or None)
CONFIGS = {"pendulum": ("PPO", PENDULUM_PPO, 200_000, None), "lunarlander": ("PPO", LUNARLANDER_PPO, 1_000_000, None),
           "breakout": ("PPO", BREAKOUT_PPO, 5_000_000, None),
           "halfcheetah-sac": ("SAC", HALFCHEETAH_SAC, 300_000, 25_000)}


def run(name: str, steps: int | None = None, overrides: dict | None = None, log=print) -> dict:
    import unirl

    algo_name, config, budget, eval_every = CONFIGS[name]
    config = dict(config, **(overrides or {}))
    steps = steps or budget
    algo = unirl.build(algo_name, config)
    t0 = time.perf_counter()
    best = float("-inf")
    curve, greedy = [], []
    next_eval = eval_every
    try:
        while algo.timesteps_total < steps:
            r = algo.train()
            best = max(best, r["episode_return_mean"])
            curve.append((r["timesteps_total"], r["episode_return_mean"], time.perf_counter() - t0))
            log(f"{r['timesteps_total']:>9d}  return {r['episode_return_mean']:9.1f}  {time.perf_counter() - t0:7.1f} s")
            if next_eval and algo.timesteps_total >= next_eval:
                next_eval += eval_every
                greedy.append((algo.timesteps_total, algo.evaluate(10)["evaluation/episode_return_mean"]))
                log(f"{algo.timesteps_total:>9d}  greedy mean-10 {greedy[-1][1]:9.1f}")
        evaluation = algo.evaluate(20)["evaluation/episode_return_mean"]
    finally:
        algo.stop()
    out = {"algo": algo_name, "env": config["env"], "steps": algo.timesteps_total, "wall_s": time.perf_counter() - t0,
           "final_return_mean": curve[-1][1], "best_return_mean": best, "greedy_eval_20": evaluation,
           "greedy_curve": greedy, "curve": curve}
    log(json.dumps({k: v for k, v in out.items() if k != "curve"}))
    return out


def plot(out: dict, path: str) -> None:
    """The training mean (last 100 episodes) and the greedy evaluations against env steps, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([c[0] for c in out["curve"]], [c[1] for c in out["curve"]], label="training mean (last 100 episodes)")
    if out.get("greedy_curve"):
        ax.plot(*zip(*out["greedy_curve"]), "o-", label="greedy mean (10 episodes)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("episode return")
    ax.set_title(f"{out['algo']} {out['env']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(CONFIGS))
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--config", default="{}", help="JSON overrides of the benchmark's config")
    p.add_argument("--json", default="", help="write the result (with its learning curve) here")
    p.add_argument("--png", default="", help="plot the learning curve here")
    args = p.parse_args(argv)
    out = run(args.name, args.steps, json.loads(args.config), log=lambda line: print(line, flush=True))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)
    if args.png:
        plot(out, args.png)


if __name__ == "__main__":
    main()
