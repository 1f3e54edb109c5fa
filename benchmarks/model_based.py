"""Model-based benchmarks (PETS, MBPO): env steps to a greedy score, PETS's planning cost per env step and its
split, PETS's throughput per backend.

    python benchmarks/model_based.py pendulum --seeds 0 1 2 3 4 --budget 3000 --eval-every 1000
    python benchmarks/model_based.py inverted-pendulum --budget 5000 --eval-every 1000   # needs unirl[mujoco]
    python benchmarks/model_based.py split                                   # where a planned step's time goes
    python benchmarks/model_based.py throughput                              # 1 and 2 workers per backend
    python benchmarks/model_based.py mbpo-pendulum --budget 5000 --eval-every 1000
    python benchmarks/model_based.py mbpo-hopper --budget 100000 --eval-every 5000 --png hopper.png

Each prints one JSON line per measurement (and `--out FILE` appends them), with the command's settings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

import unirl

#: The defaults on JAX (the fastest planner here: one compiled call per model step).
PENDULUM = {"env": "Pendulum-v1", "framework": "jax"}
#: InvertedPendulum-v5 (1,000-step episodes): 250 random steps, then 250-step iterations.
INVERTED = {"env": "InvertedPendulum-v5", "framework": "jax", "train_batch_size": 250, "learning_starts": 250}


#: MBPO's defaults on JAX.
MBPO_PENDULUM = {"env": "Pendulum-v1", "framework": "jax"}
#: MBPO on Hopper-v5 (the paper's settings scaled to two cores: see MBPOConfig).
MBPO_HOPPER = {"env": "Hopper-v5", "framework": "jax", "learning_starts": 5000,
               "model_rollout_schedule": [[20000, 1], [100000, 15]]}


def emit(record: dict, out: str | None) -> None:
    record.setdefault("date", time.strftime("%Y-%m-%d"))
    record.setdefault("machine", f"{platform.machine()} {os.cpu_count()} cores")
    line = json.dumps(record)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def learning(name: str, config: dict, seeds, budget: int, eval_every: int, episodes: int, out, algo_name="PETS",
             png=None, stop_at: float | None = None) -> None:
    """Train each seed to `budget` env steps; every `eval_every` steps, the greedy mean over `episodes` episodes
    (and stop there once it reaches `stop_at`, if given)."""
    for seed in seeds:
        t0 = time.perf_counter()
        curve = []
        with unirl.build(algo_name, dict(config, seed=seed)) as algo:
            next_eval = eval_every
            while algo.timesteps_total < budget:
                algo.train()
                if algo.timesteps_total >= next_eval:
                    score = algo.evaluate(episodes)["evaluation/episode_return_mean"]
                    curve.append([algo.timesteps_total, round(score, 1), round(time.perf_counter() - t0, 1)])
                    print(name, seed, curve[-1], flush=True)
                    next_eval += eval_every
                    if png:
                        env = config.get("env_config", {}).get("env_id", config["env"])
                        plot(curve, f"{algo_name} on {env}, seed {seed}", png, episodes)
                    if stop_at is not None and score >= stop_at:
                        break
        emit({"benchmark": f"{algo_name.lower()}-{name}", "seed": seed, "config": config, "budget": budget,
              "eval_episodes": episodes, "curve": curve, "final": curve[-1][1] if curve else None,
              "wall_s": round(time.perf_counter() - t0, 1)}, out)


def plot(curve, title: str, png: str, episodes: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"greedy return (mean of {episodes})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def split(steps: int, out) -> None:
    """A Pendulum model trained on 400 env steps, then `steps` greedy planned steps of one env: the time in the
    model's calls, in the planner's NumPy (sampling, scoring, CEM updates) and in the env."""
    import gymnasium as gym

    for framework in ("jax", "torch"):
        with unirl.build("PETS", dict(PENDULUM, framework=framework)) as algo:
            while algo.timesteps_total < 400:
                algo.train()
            policy = algo.policy
            call = policy.call
            spent = {"model": 0.0}

            def timed(fn, batch):
                t = time.perf_counter()
                try:
                    return call(fn, batch)
                finally:
                    spent["model"] += time.perf_counter() - t

            policy.call = timed
            env = gym.make("Pendulum-v1")
            obs, _ = env.reset(seed=0)
            plan_s = env_s = 0.0
            for _ in range(steps):
                t = time.perf_counter()
                a = policy.compute_actions(np.asarray(obs, np.float32)[None])
                plan_s += time.perf_counter() - t
                t = time.perf_counter()
                obs, _, term, trunc, _ = env.step(a[0])
                env_s += time.perf_counter() - t
                if term or trunc:
                    obs, _ = env.reset()
            c = algo.config
            emit({"benchmark": "pets-split", "framework": framework, "steps": steps,
                  "planner": {k: getattr(c, k) for k in ("planner", "horizon", "population", "num_particles",
                                                         "planner_iterations", "ensemble_size")},
                  "model": c.model, "ms_per_step": round(1e3 * (plan_s + env_s) / steps, 2),
                  "model_ms": round(1e3 * spent["model"] / steps, 2),
                  "planner_numpy_ms": round(1e3 * (plan_s - spent["model"]) / steps, 2),
                  "env_ms": round(1e3 * env_s / steps, 3),
                  "model_calls_per_step": c.horizon * c.planner_iterations}, out)


def throughput(out) -> None:
    """Env steps per second of planning with 1 and 2 workers (2 envs in all) on each process backend, as ratios."""
    base = dict(PENDULUM, train_batch_size=200, learning_starts=200)
    for backend in ("multiprocessing", "ray", "mpi"):
        rates = {}
        for workers in (1, 2):
            cfg = dict(base, backend=backend, num_workers=workers, num_envs_per_worker=2 // workers)
            try:
                with unirl.build("PETS", cfg) as algo:
                    algo.train()  # random steps, and the first model fit
                    t = time.perf_counter()
                    for _ in range(2):
                        algo.train()
                    rates[workers] = 400 / (time.perf_counter() - t)
            except Exception as e:  # a backend not available here (no mpiexec)
                rates[workers] = f"unavailable: {e}"
        record = {"benchmark": "pets-throughput", "backend": backend, "env_steps_per_s": rates}
        if all(isinstance(v, float) for v in rates.values()):
            record["ratio_2_to_1"] = round(rates[2] / rates[1], 2)
        emit(record, out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["pendulum", "inverted-pendulum", "split", "throughput", "mbpo-pendulum",
                                    "mbpo-hopper"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=1000)
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default=None)
    p.add_argument("--png", default=None)
    p.add_argument("--config", default="{}", help="JSON overrides of the benchmark's config")
    a = p.parse_args(argv)
    more = json.loads(a.config)
    if a.what == "pendulum":
        learning("pendulum", dict(PENDULUM, **more), a.seeds, a.budget or 3000, a.eval_every, a.episodes, a.out)
    elif a.what == "inverted-pendulum":
        learning("inverted-pendulum", dict(INVERTED, **more), a.seeds, a.budget or 5000, a.eval_every, a.episodes,
                 a.out)
    elif a.what == "mbpo-pendulum":
        learning("pendulum", dict(MBPO_PENDULUM, **more), a.seeds, a.budget or 5000, a.eval_every, a.episodes, a.out,
                 "MBPO", a.png)
    elif a.what == "mbpo-hopper":
        learning("hopper", dict(MBPO_HOPPER, **more), a.seeds, a.budget or 100_000, a.eval_every, a.episodes, a.out,
                 "MBPO", a.png)
    elif a.what == "split":
        split(a.steps, a.out)
    else:
        throughput(a.out)


if __name__ == "__main__":
    main()
