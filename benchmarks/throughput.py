"""Env steps/s of IMPALA vs A2C vs PPO (or any algorithms) with 1 and 2 workers on a backend, in one run.

    python benchmarks/throughput.py --backend multiprocessing,ray
    mpiexec -n 3 python benchmarks/throughput.py --backend mpi      # rank 0 drives, 2 workers at most
"""
from __future__ import annotations

import argparse
import json
import time

import unirl


def measure(algo: str, backend: str, num_workers: int, seconds: float, env: str) -> dict:
    """Train for about `seconds` after one warm-up iteration; env steps/s over that time."""
    with unirl.build(algo, {"env": env, "backend": backend, "num_workers": num_workers, "seed": 0}) as a:
        a.train()
        steps0, t0 = a.timesteps_total, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a.train()
        dt = time.perf_counter() - t0
        return {"algo": algo, "backend": backend, "num_workers": num_workers,
                "env_steps_per_s": (a.timesteps_total - steps0) / dt}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="IMPALA,A2C,PPO")
    p.add_argument("--backend", default="multiprocessing")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    for backend in args.backend.split(","):
        for algo in args.algo.split(","):
            one, two = (measure(algo, backend, n, args.seconds, args.env) for n in (1, 2))
            two["ratio_to_1_worker"] = two["env_steps_per_s"] / one["env_steps_per_s"]
            rows += [one, two]
            print(f"{algo} {backend}: 1 worker {one['env_steps_per_s']:,.0f} env steps/s, 2 workers "
                  f"{two['env_steps_per_s']:,.0f} ({two['ratio_to_1_worker']:.2f}x)", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
