"""Fault benchmark: inject N worker kills into a long PPO run on each process backend and report what recovery did.

    python -m unirl.benchmarks.faults --backend multiprocessing,ray --iterations 60 --kills 5 [--json out.json]

For each backend: an unfaulted run, then the same run with a worker SIGKILLed at N evenly spaced
iterations (alternating workers). Reported: faults survived, worker calls redone (one redone
sampling call per fault), time lost per fault (the faulted iterations' extra time over the
median iteration), and whether the final weights are bit-identical to the unfaulted run's.
MPI cannot replace a rank (a rank failure ends the job; resume it with --resume), so it is not
measured here.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time

import numpy as np

CONFIG = {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 4, "train_batch_size": 512,
          "minibatch_size": 128, "num_epochs": 2}


def _pid(algo, i):
    b = algo.backend
    if b.name == "ray":
        return int(b.describe_worker(algo.sampler.workers[i]).split()[1])
    return b.worker_pids()[i]


def run(backend: str, iterations: int, kills: int, framework: str = "torch") -> dict:
    import unirl

    cfg = dict(CONFIG, backend=backend, framework=framework)
    with unirl.build("PPO", cfg) as a:
        t = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            a.train()
            t.append(time.perf_counter() - t0)
        ref = a.policy.get_flat_weights()
    at = {int(iterations * (k + 1) / (kills + 1)): k % CONFIG["num_workers"] for k in range(kills)}
    with unirl.build("PPO", cfg) as b:
        times, faulted = [], []
        for it in range(iterations):
            if it in at:
                os.kill(_pid(b, at[it]), signal.SIGKILL)
                faulted.append(it)
            t0 = time.perf_counter()
            r = b.train()
            times.append(time.perf_counter() - t0)
        rec = b.backend.recovery
        same = bool(np.array_equal(ref, b.policy.get_flat_weights()))
    base = statistics.median(t)
    lost = [times[i] - base for i in faulted]
    return {"backend": backend, "iterations": iterations, "faults_injected": len(at),
            "faults_survived": r["num_worker_restarts"], "calls_redone": rec.num_calls_redone,
            "time_lost_per_fault_s": round(statistics.mean(lost), 3) if lost else 0.0,
            "median_iteration_s": round(base, 4), "final_weights_match": same}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="multiprocessing,ray")
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--framework", default="torch")
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    for backend in args.backend.split(","):
        row = run(backend, args.iterations, args.kills, args.framework)
        rows.append(row)
        print(f"{backend:16s} kills {row['faults_injected']}  survived {row['faults_survived']}  "
              f"calls redone {row['calls_redone']}  time lost/fault {row['time_lost_per_fault_s']:.2f} s "
              f"(iteration {row['median_iteration_s'] * 1000:.0f} ms)  final weights match: {row['final_weights_match']}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["final_weights_match"] and r["faults_survived"] == r["faults_injected"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
