"""Fault benchmark: inject N worker kills into a long run per algorithm and process backend; report what recovery did.

    python -m unirl.benchmarks.faults --algo PPO,DQN,ES,IMPALA,A3C --backend multiprocessing,ray \
        --iterations 60 --kills 5 [--json out.json]

For each (algorithm, backend): an unfaulted run, then the same run with a worker SIGKILLed before N
evenly spaced iterations (alternating workers 0 and 1). Reported: faults survived, worker calls
redone (synchronous patterns redo the lost call; ES re-evaluates the lost chunks; asynchronous
patterns drop the lost results), time lost per fault (the faulted iterations' extra time over the
unfaulted run's median iteration; for asynchronous algorithms the kill may be noticed an
iteration later, so both iterations count), the replacement's own time (kill noticed -> new
worker ready), and the check that fits the algorithm: synchronous (PPO, DQN) and population (ES)
runs must end with final weights bit-identical to the unfaulted run's; asynchronous ones (IMPALA,
A3C) differ from any other free run by nature, so their faulted run's recorded arrival schedule
(with the replacements in it) is replayed on the local backend and must give the same bits.
MPI cannot replace a rank (a rank failure ends the job; resume it with --resume): not measured.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import time

import numpy as np

CONFIGS = {
    "PPO": {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 4, "train_batch_size": 512,
            "minibatch_size": 128, "num_epochs": 2},
    "DQN": {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 4, "learning_starts": 0,
            "train_batch_size": 64},
    "ES": {"env": "CartPole-v1", "num_workers": 2, "episodes_per_batch": 40, "noise_table_size": 1_000_000},
    "IMPALA": {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 4, "rollout_fragment_length": 16,
               "train_batch_size": 128},
    "A3C": {"env": "CartPole-v1", "num_workers": 2, "num_envs_per_worker": 4, "rollout_fragment_length": 8,
            "train_batch_size": 128},
}
ASYNC = ("IMPALA", "A3C")
CONFIG = CONFIGS["PPO"]


def _pid(algo, i):
    from unirl.backends.base import WorkerHandle

    b = algo.backend
    if b.name == "ray":
        return int(b.describe_worker(WorkerHandle(i)).split()[1])
    return b.worker_pids()[i]


def run(backend: str, iterations: int, kills: int, framework: str = "torch", algo: str = "PPO") -> dict:
    import unirl

    cfg = dict(CONFIGS[algo], backend=backend, framework=framework)
    with unirl.build(algo, cfg) as a:
        t = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            a.train()
            t.append(time.perf_counter() - t0)
        ref = a.policy.get_flat_weights()
    at = {int(iterations * (k + 1) / (kills + 1)): k % cfg["num_workers"] for k in range(kills)}
    with unirl.build(algo, cfg) as b:
        times, faulted = [], []
        for it in range(iterations):
            if it in at:
                os.kill(_pid(b, at[it]), signal.SIGKILL)
                faulted.append(it)
            t0 = time.perf_counter()
            r = b.train()
            times.append(time.perf_counter() - t0)
        rec = b.backend.recovery
        weights = b.policy.get_flat_weights()
        schedule = b.get_state()[1].get("arrival_schedule")
    check = "final_weights_match"
    if algo in ASYNC:
        check = "faulted_schedule_replays"
        with unirl.build(algo, dict(cfg, backend="local", arrival_schedule=schedule)) as c:
            for _ in range(iterations):
                c.train()
            same = bool(np.array_equal(weights, c.policy.get_flat_weights()))
    else:
        same = bool(np.array_equal(ref, weights))
    base = statistics.median(t)
    counted = sorted({j for i in faulted for j in ((i, i + 1) if algo in ASYNC else (i,)) if j < iterations})
    lost = sum(times[i] - base for i in counted) / max(len(faulted), 1)
    return {"algo": algo, "backend": backend, "iterations": iterations, "faults_injected": len(at),
            "faults_survived": r["num_worker_restarts"], "calls_redone": rec.num_calls_redone,
            "time_lost_per_fault_s": round(lost, 3), "replacement_s": round(rec.time_lost_s / max(len(at), 1), 3),
            "median_iteration_s": round(base, 4), "check": check, "ok": same}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", default="PPO,DQN,ES,IMPALA,A3C")
    p.add_argument("--backend", default="multiprocessing,ray")
    p.add_argument("--iterations", type=int, default=60)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--framework", default="torch")
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    for algo in args.algo.split(","):
        for backend in args.backend.split(","):
            row = run(backend, args.iterations, args.kills, args.framework, algo)
            rows.append(row)
            print(f"{algo:7s} {backend:16s} kills {row['faults_injected']}  survived {row['faults_survived']}  "
                  f"calls redone {row['calls_redone']}  time lost/fault {row['time_lost_per_fault_s']:.2f} s "
                  f"(replacement {row['replacement_s']:.2f} s, iteration {row['median_iteration_s'] * 1000:.0f} ms)  "
                  f"{row['check']}: {row['ok']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all(r["ok"] and r["faults_survived"] == r["faults_injected"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
