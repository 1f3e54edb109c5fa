"""ES / ARS scaling: episodes/s and env steps/s with 1 and 2 workers on each process backend, as ratios.

The runs with 1 and 2 workers are bit-identical (the population split changes no number), so
they do the same work and the ratio of their rates is the scaling. Run it on free cores:

    python benchmarks/population.py --algo ES --backend multiprocessing,ray
    mpiexec -n 3 python benchmarks/population.py --algo ES --backend mpi     # rank 0 drives, 2 workers at most
"""
from __future__ import annotations

import argparse
import json
import time

import unirl


def measure(algo: str, backend: str, num_workers: int, iterations: int, env: str, episodes: int) -> dict:
    # ES counts its population in episodes, ARS in directions (two episodes each)
    population = {"episodes_per_batch": episodes} if algo == "ES" else {"num_directions": max(1, episodes // 2)}
    config = {"env": env, "backend": backend, "num_workers": num_workers, "noise_table_size": 5_000_000, "seed": 0,
              **population}
    with unirl.build(algo, config) as a:
        a.train()  # start-up and the first noise-table build are not what we measure
        steps0, episodes0 = a.timesteps_total, a.episodes_total
        t0 = time.perf_counter()
        for _ in range(iterations):
            a.train()
        dt = time.perf_counter() - t0
        return {"algo": algo, "backend": backend, "num_workers": num_workers, "seconds": dt,
                "episodes_per_s": (a.episodes_total - episodes0) / dt,
                "env_steps_per_s": (a.timesteps_total - steps0) / dt, "weights_digest": a.weights_digest()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="ES")
    p.add_argument("--backend", default="multiprocessing,ray")
    p.add_argument("--env", default="CartPole-v1")
    p.add_argument("--episodes", type=int, default=200, help="episodes per iteration")
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    for backend in args.backend.split(","):
        one, two = (measure(args.algo, backend, n, args.iterations, args.env, args.episodes) for n in (1, 2))
        assert one["weights_digest"] == two["weights_digest"], "1 and 2 workers must compute the same run"
        two["ratio_to_1_worker"] = two["episodes_per_s"] / one["episodes_per_s"]
        rows += [one, two]
        print(f"{args.algo} {backend}: 1 worker {one['episodes_per_s']:.0f} episodes/s "
              f"({one['env_steps_per_s']:.0f} steps/s), 2 workers {two['episodes_per_s']:.0f} episodes/s "
              f"({two['env_steps_per_s']:.0f} steps/s): {two['ratio_to_1_worker']:.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
