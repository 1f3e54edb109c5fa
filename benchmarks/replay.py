"""Replay and Q-learning numbers: sum-tree samples/s, DQN on CartPole-v1 to a training mean of 475, Ape-X env steps/s per actor count.

    python -m unirl.benchmarks.replay tree                  # sum tree / prioritized buffer throughput
    python -m unirl.benchmarks.replay dqn --seeds 0 1 2     # DQN learning: steps and wall time to 475
    python -m unirl.benchmarks.replay apex --backends multiprocessing ray mpi --actors 1 2 4
    python -m unirl.benchmarks.replay apex --backends ray --actors 1 2 --rounds 5   # counts in turn, median ratio
    python -m unirl.benchmarks.replay apex-solve --backends multiprocessing ray [--config '{...}']

- tree: a prioritized buffer of 1M rows (and 100k); samples/s of `sample(B)` (prefix-sum descent,
  gather of rows, importance weights) and of `update_priorities(B)`, B = 64 and 512, the median of 5
  rounds of 200 calls; plus the bare `SumTree.find` rate.
- dqn: the default DQN config, torch, local; trains until the mean of the last 20 training episodes
  reaches 475 or the step budget ends; reports steps, wall time, env steps/s and the greedy mean over
  20 episodes at the end.
- apex: env steps/s of free-running Ape-X (2 shards, 4 envs per actor, 32 steps per env per actor
  task) with each actor count on each backend, over a fixed wall-clock window after a warm-up, with
  the ratio to one actor, the learner's steps/s and the replay ratio in that window, and where the
  CPU went (microseconds per env step of the driver with its learner, the actors, the shards); the
  1-actor row also gives the most 2 actors can gain on 2 cores from those, 2 max(a, r) / (a + r)
  (a: the actors' CPU per step, r: the rest's).
- apex-solve: 4 actors, 2 shards on CartPole-v1 until the greedy mean over 20 episodes reaches 475
  (`--backends multiprocessing ray`; MPI: run under `mpiexec -n 7 python -m unirl.benchmarks.replay
  apex-solve --backends mpi`): env steps, wall seconds, replay ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from unirl.benchmarks.throughput import scaling_bound_of, worker_cpu_s


def bench_tree(capacities=(100_000, 1_000_000), batch_sizes=(64, 512), rounds=5, calls=200) -> list[dict]:
    from unirl.replay import PrioritizedReplayBuffer

    out = []
    for cap in capacities:
        rng = np.random.default_rng(0)
        buf = PrioritizedReplayBuffer(cap, alpha=0.6)
        chunk = 10_000
        for start in range(0, cap, chunk):
            buf.add({"obs": rng.random((chunk, 4), dtype=np.float32), "actions": rng.integers(0, 2, chunk)},
                    priorities=rng.random(chunk) + 0.01)
        for b in batch_sizes:
            sample_rates, update_rates, find_rates = [], [], []
            for _ in range(rounds):
                t = time.perf_counter()
                for _ in range(calls):
                    _, idx, _ = buf.sample(b, rng, beta=0.4)
                sample_rates.append(calls * b / (time.perf_counter() - t))
                t = time.perf_counter()
                for _ in range(calls):
                    buf.update_priorities(idx, rng.standard_normal(b))
                update_rates.append(calls * b / (time.perf_counter() - t))
                t = time.perf_counter()
                for _ in range(calls):
                    buf.tree.find(rng.random(b) * buf.tree.total)
                find_rates.append(calls * b / (time.perf_counter() - t))
            out.append({"capacity": cap, "batch": b, "sample_rows_per_s": statistics.median(sample_rates),
                        "update_rows_per_s": statistics.median(update_rates),
                        "find_per_s": statistics.median(find_rates)})
    return out


def bench_dqn(seed: int, framework: str = "torch", budget: int = 50_000, config: dict | None = None) -> dict:
    import unirl

    cfg = {"env": "CartPole-v1", "seed": seed, "framework": framework}
    cfg.update(config or {})
    algo = unirl.build("DQN", cfg)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        last20: list[float] = []
        reached = None
        while algo.timesteps_total < budget:
            r = algo.train()
            last20 = (last20 + r["episode_returns_this_iter"])[-20:]
            if reached is None and len(last20) == 20 and np.mean(last20) >= 475:
                reached = {"steps": algo.timesteps_total, "wall_s": time.perf_counter() - t0,
                           "cpu_s": time.process_time() - c0}
                break
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        greedy = algo.evaluate(20)["evaluation/episode_return_mean"]
        return {"seed": seed, "framework": framework, "reached_475": reached, "steps": algo.timesteps_total,
                "wall_s": wall, "cpu_s": cpu, "env_steps_per_s": algo.timesteps_total / wall, "greedy_mean_20": greedy,
                "last20_mean": float(np.mean(last20)) if last20 else float("nan")}
    finally:
        algo.stop()


def bench_apex(backend: str, actors: int, seconds: float = 20.0, warmup_s: float = 5.0, envs_per_actor: int = 4,
               steps_per_task: int = 32, config: dict | None = None) -> dict:
    """Env steps/s (and learner steps/s, replay ratio) of free-running Ape-X with `actors` actors over a
    `seconds` window after `warmup_s` (learning has started by then); every actor task samples
    steps_per_task steps of each of its envs."""
    import unirl

    cfg = {"env": "CartPole-v1", "backend": backend, "num_workers": actors, "num_envs_per_worker": envs_per_actor,
           "train_batch_size": steps_per_task * envs_per_actor * actors, "num_replay_shards": 2,
           "learning_starts": 1000}
    cfg.update(config or {})
    algo = unirl.build("APEX", cfg)
    try:
        t_end = time.perf_counter() + warmup_s
        while time.perf_counter() < t_end or algo.execution.grad_steps == 0:
            algo.train()
        p = algo.pattern
        cpu = lambda: (time.process_time(), worker_cpu_s(algo.backend, p.actors), worker_cpu_s(algo.backend, p.shards))  # noqa: E731
        s0, g0, t0, cpu0 = algo.timesteps_total, algo.execution.grad_steps, time.perf_counter(), cpu()
        while time.perf_counter() - t0 < seconds:
            r = algo.train()
        dt = time.perf_counter() - t0
        cpu1 = cpu()
        steps, grads = algo.timesteps_total - s0, algo.execution.grad_steps - g0
        # CPU microseconds per env step: the driver (learner included), the actors, the shards.
        us = [None if a is None or b is None else 1e6 * (b - a) / max(steps, 1) for a, b in zip(cpu0, cpu1)]
        return {"backend": backend, "framework": algo.config.framework, "actors": actors,
                "steps_per_task": steps_per_task * envs_per_actor, "env_steps_per_s": steps / dt, "learner_steps_per_s": grads / dt,
                "replay_ratio_window": grads * algo.config.replay_batch_size / max(steps, 1),
                "replay_ratio": r["learner/replay_ratio"], "weight_syncs": r["learner/weight_syncs"],
                "staleness": r["learner/weight_staleness_mean_total"], "window_s": dt,
                "driver_cpu_us_per_step": us[0], "actors_cpu_us_per_step": us[1], "shards_cpu_us_per_step": us[2]}
    finally:
        algo.stop()


def apex_scaling(backend: str, actors: list[int], rounds: int = 1, seconds: float = 20.0, envs_per_actor: int = 4,
                 steps_per_task: int = 32, config: dict | None = None, measure=None) -> list[dict]:
    """One row per actor count (each a fresh run) with its ratio to the first count's rate. With rounds > 1
    the counts are measured in turn round after round (1, 2, 1, 2, ...), each row's ratio is the median of
    its rounds' ratios (a drifting baseline on a shared machine moves both sides of a round's ratio alike)
    and its other numbers are its median round's, with that round's first-count rate as
    `base_env_steps_per_s`; the first count's row is from the second count's median round and gives the
    2-core bound."""
    measure = measure or bench_apex
    runs = [[measure(backend, n, seconds, envs_per_actor=envs_per_actor, steps_per_task=steps_per_task,
                     config=config) for n in actors] for _ in range(max(1, rounds))]
    ratios = [[r[k]["env_steps_per_s"] / r[0]["env_steps_per_s"] for r in runs] for k in range(len(actors))]
    medians = [statistics.median(rk) for rk in ratios]
    # the round whose ratio is nearest each count's median (the first count: the second count's round)
    shown = [min(range(len(runs)), key=lambda i, k=k: abs(ratios[k][i] - medians[k])) for k in range(len(actors))]
    if len(actors) > 1:
        shown[0] = shown[1]
    rows = []
    for k, i in enumerate(shown):
        row = dict(runs[i][k], ratio_to_1=medians[k], base_env_steps_per_s=runs[i][0]["env_steps_per_s"])
        if len(runs) > 1:
            row["ratio_rounds"] = ratios[k]
        if k == 0:
            # 2 cores: actors need actors_cpu per step, everything else (driver, learner, shards) the rest.
            rest = None if None in (row["driver_cpu_us_per_step"], row["shards_cpu_us_per_step"]) else \
                row["driver_cpu_us_per_step"] + row["shards_cpu_us_per_step"]
            row["bound_2_actors_on_2_cores"] = scaling_bound_of(row["actors_cpu_us_per_step"], rest)
        rows.append(row)
    return rows


def bench_apex_solve(backend: str, seed: int = 0, budget: int = 100_000, config: dict | None = None) -> dict:
    """Ape-X with 4 actors and 2 shards on CartPole-v1 until the greedy mean over 20 episodes (checked every
    25 iterations once past 10k steps) reaches 475 or the budget ends: steps, wall and CPU seconds."""
    import unirl

    cfg = {"env": "CartPole-v1", "backend": backend, "seed": seed, "num_workers": 4, "num_envs_per_worker": 2,
           "num_replay_shards": 2}
    cfg.update(config or {})
    algo = unirl.build("APEX", cfg)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        best, r = 0.0, {}
        while algo.timesteps_total < budget and best < 475:
            r = algo.train()
            if algo.iteration % 25 == 0 and algo.timesteps_total >= 10_000:
                best = max(best, algo.evaluate(20)["evaluation/episode_return_mean"])
        return {"backend": backend, "seed": seed, "greedy_best": best, "solved": best >= 475,
                "steps": algo.timesteps_total, "wall_s": time.perf_counter() - t0,
                "driver_cpu_s": time.process_time() - c0, "grad_steps": algo.execution.grad_steps,
                "replay_ratio": r.get("learner/replay_ratio"), "weight_syncs": r.get("learner/weight_syncs")}
    finally:
        algo.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["tree", "dqn", "apex", "apex-solve"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--framework", default="torch")
    p.add_argument("--budget", type=int, default=50_000)
    p.add_argument("--config", default="{}", help="DQN config overrides (JSON)")
    p.add_argument("--backends", nargs="+", default=["local", "multiprocessing"])
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--seconds", type=float, default=20.0, help="apex: measured window per actor count")
    p.add_argument("--steps-per-task", type=int, default=32, help="apex: steps of each env per actor task")
    p.add_argument("--envs-per-actor", type=int, default=4, help="apex: envs per actor")
    p.add_argument("--rounds", type=int, default=1,
                   help="apex: measure the actor counts in turn this many times; each ratio is the median round's")
    args = p.parse_args(argv)
    overrides = dict(json.loads(args.config), framework=args.framework)
    if args.what == "tree":
        for row in bench_tree():
            print(json.dumps(row), flush=True)
    elif args.what == "dqn":
        for seed in args.seeds:
            print(json.dumps(bench_dqn(seed, args.framework, args.budget, json.loads(args.config))), flush=True)
    elif args.what == "apex-solve":
        for backend in args.backends:
            print(json.dumps(bench_apex_solve(backend, args.seeds[0], args.budget, overrides)), flush=True)
    else:
        for backend in args.backends:
            for row in apex_scaling(backend, args.actors, args.rounds, args.seconds, args.envs_per_actor,
                                    args.steps_per_task, overrides):
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
