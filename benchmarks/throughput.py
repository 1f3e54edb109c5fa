"""Env steps/s of IMPALA vs A2C vs PPO (or any algorithms) with 1 and 2 workers on a backend, in one run.

    python benchmarks/throughput.py --backend multiprocessing,ray
    mpiexec -n 3 python benchmarks/throughput.py --backend mpi      # rank 0 drives, 2 workers at most
    python benchmarks/throughput.py --algo IMPALA --to-score 475    # also: wall time to a training mean of 475
    python benchmarks/throughput.py --algo IMPALA --backend ray --rounds 5   # 1 and 2 workers alternately

Besides steps/s, each measurement records where the CPU went: the driver's CPU seconds and the
workers' (summed) per 1,000 env steps. On a machine with C cores, n workers and a driver that
each need the CPU they need, steps/s can grow from 1 to 2 workers by at most
`2 max(w, d) / (w + d)` when C = 2 (w, d: worker and driver CPU per env step): that bound is
printed next to the measured ratio, so a poor scaling shows whether the driver is the limit.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import unirl


def worker_cpu_s(backend, handles) -> float | None:
    """CPU seconds (user + system) used so far by the processes hosting these workers (0 on a backend
    whose workers run in the driver; None where a worker's process cannot be seen from here)."""
    import psutil

    if backend.runs_in_driver:
        return 0.0
    total = 0.0
    for pid in {backend.worker_pid(h) for h in handles}:
        if pid is None:
            return None
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def _worker_cpu_s(algo, num_workers: int) -> float | None:
    from unirl.backends.base import WorkerHandle

    return worker_cpu_s(algo.backend, [WorkerHandle(i) for i in range(num_workers)])


def scaling_bound_of(worker: float | None, driver: float | None) -> float | None:
    """The most 2 workers can gain over 1 on 2 cores when a worker needs `worker` and everything else
    (the driver, and any helper processes) `driver` CPU per env step of one worker's work."""
    if not worker or not driver:
        return None
    return 2 * max(worker, driver) / (worker + driver)


def measure(algo: str, backend: str, num_workers: int, seconds: float, env: str, config: dict | None = None) -> dict:
    """Train for about `seconds` after one warm-up iteration; env steps/s and CPU use over that time."""
    cfg = {"env": env, "backend": backend, "num_workers": num_workers, "seed": 0, **(config or {})}
    with unirl.build(algo, cfg) as a:
        a.train()
        lags = []
        steps0, t0, cpu0, wcpu0 = a.timesteps_total, time.perf_counter(), time.process_time(), _worker_cpu_s(a, num_workers)
        while time.perf_counter() - t0 < seconds:
            result = a.train()
            lag = result.get("learner/policy_lag_mean", result.get("policy_lag_mean"))
            if lag is not None:
                lags.append(lag)
        dt, steps = time.perf_counter() - t0, a.timesteps_total - steps0
        driver_cpu, wcpu1 = time.process_time() - cpu0, _worker_cpu_s(a, num_workers)
        row = {"algo": algo, "backend": backend, "num_workers": num_workers, "env_steps_per_s": steps / dt,
               "driver_cpu_s_per_1k_steps": 1e3 * driver_cpu / steps,
               "worker_cpu_s_per_1k_steps": None if wcpu1 is None else 1e3 * (wcpu1 - wcpu0) / steps}
        if lags:
            row["policy_lag_mean"] = sum(lags) / len(lags)
        return row


def time_to_score(algo: str, backend: str, num_workers: int, env: str, score: float, budget: int,
                  config: dict | None = None) -> dict:
    """Wall time (build included) until the training `episode_return_mean` reaches `score`, within `budget` steps."""
    t0 = time.perf_counter()
    cfg = {"env": env, "backend": backend, "num_workers": num_workers, "seed": 0, **(config or {})}
    with unirl.build(algo, cfg) as a:
        mean = float("nan")
        while a.timesteps_total < budget:
            mean = a.train()["episode_return_mean"]
            if mean >= score:
                break
        return {"algo": algo, "backend": backend, "num_workers": num_workers, "score": score,
                "reached": bool(mean >= score), "wall_s": time.perf_counter() - t0, "env_steps": a.timesteps_total}


def scaling_bound(one: dict) -> float | None:
    """The most 2 workers can gain over 1 on 2 cores given one worker's and the driver's CPU per step."""
    return scaling_bound_of(one.get("worker_cpu_s_per_1k_steps"), one["driver_cpu_s_per_1k_steps"])


def scaling(algo: str, backend: str, seconds: float, env: str, config: dict | None = None,
            rounds: int = 1) -> tuple[dict, dict]:
    """(1-worker row, 2-worker row) with the 2-worker row's `ratio_to_1_worker`. With rounds > 1 the two
    counts are measured alternately (1, 2, 1, 2, ...) and the ratio is the median of the rounds' ratios,
    so a baseline that drifts on a shared machine moves both sides of each ratio alike; the rows
    returned are those of the median round, with every round's ratio in `ratio_rounds`."""
    pairs = []
    for _ in range(max(1, rounds)):
        one, two = (measure(algo, backend, n, seconds, env, config) for n in (1, 2))
        two["ratio_to_1_worker"] = two["env_steps_per_s"] / one["env_steps_per_s"]
        pairs.append((one, two))
    ratios = [p[1]["ratio_to_1_worker"] for p in pairs]
    one, two = sorted(pairs, key=lambda p: p[1]["ratio_to_1_worker"])[(len(pairs) - 1) // 2]
    two["ratio_rounds"] = ratios
    two["ratio_to_1_worker"] = statistics.median(ratios)  # an even count: the mean of the middle two
    two["bound_on_2_cores"] = scaling_bound(one)
    return one, two


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="IMPALA,A2C,PPO")
    p.add_argument("--backend", default="multiprocessing")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--config", default="{}", help="JSON config overrides for every algorithm")
    p.add_argument("--to-score", type=float, default=None,
                   help="also measure wall time until the training episode_return_mean reaches this (2 workers)")
    p.add_argument("--budget", type=int, default=500_000, help="env-step budget of --to-score")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure 1 and 2 workers alternately this many times; the ratio is the median round's")
    p.add_argument("--json")
    args = p.parse_args(argv)
    config = json.loads(args.config)
    rows = []
    for backend in args.backend.split(","):
        for algo in args.algo.split(","):
            one, two = scaling(algo, backend, args.seconds, args.env, config, args.rounds)
            rows += [one, two]
            bound = "" if two["bound_on_2_cores"] is None else f", bound on 2 cores {two['bound_on_2_cores']:.2f}x"
            wcpu = one["worker_cpu_s_per_1k_steps"]
            print(f"{algo} {backend}: 1 worker {one['env_steps_per_s']:,.0f} env steps/s, 2 workers "
                  f"{two['env_steps_per_s']:,.0f} ({two['ratio_to_1_worker']:.2f}x{bound}); CPU s per 1k steps "
                  f"driver {one['driver_cpu_s_per_1k_steps']:.3f}, worker "
                  f"{'-' if wcpu is None else format(wcpu, '.3f')}"
                  + (f"; policy lag {two['policy_lag_mean']:.1f}" if "policy_lag_mean" in two else "")
                  + ("" if len(two["ratio_rounds"]) < 2 else
                     "; rounds " + ", ".join(f"{r:.2f}x" for r in two["ratio_rounds"]) + " (median shown)"), flush=True)
            if args.to_score is not None:
                r = time_to_score(algo, backend, 2, args.env, args.to_score, args.budget, config)
                rows.append(r)
                print(f"{algo} {backend} 2 workers: training mean {'>=' if r['reached'] else 'below'} {args.to_score:g} "
                      f"after {r['env_steps']:,} env steps, {r['wall_s']:.1f} s", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
