"""`unirl bench --backend=...`: per backend, round trip, 10 MB to 4 workers, pipelined tasks/s, PPO sampling and end-to-end steps/s; ratios to local.

Per backend, on one started backend:

- round trip: median latency of `get(call(worker, "noop"))` over 500 calls, after warm-up (µs);
  on Ray also a bare Ray actor's `ray.get(actor.noop.remote())`, interleaved with ours (the floor);
- 10 MB to 4 workers: median time for one 10 MB float32 array sent to each of 4 workers, each
  answering with a checksum (ms), by one `call` per worker and by one `broadcast` (the arguments
  serialized once, a large array crossing once per process);
- tasks/s pipelined: empty tasks on 2 workers with 64 calls in flight on each;
- per framework: sampling as below, PPO end to end (`train()`, default config, 1 worker) env
  steps/s, and the peak RSS (VmHWM) of the processes hosting the rollout workers;
- sampling: env steps/s of `SyncSamples.sample` (the path PPO uses: weights out, batches back,
  joined in env order) with 1 and 2 rollout workers, 16 CartPole envs each, 64 steps per sample;
  the median of 5 rounds that alternate between 1 and 2 workers (fair on a shared machine).

Local always runs first in the same invocation and is the reference of every ratio. MPI is
measured inside its own `mpiexec -n 5` job (rank 0 measures, ranks 1-4 host the workers),
started here as a subprocess that writes its record as JSON.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from unirl.errors import UnirlError

ROUND_TRIPS = 500
ENVS_PER_WORKER = 16
ROLLOUT_LENGTH = 64
SAMPLE_ROUNDS = 4


def _round_trip_us(backend) -> float:
    from unirl.conformance.workers import Echo

    (w,) = backend.spawn(Echo, [(0,)])
    for _ in range(50):
        backend.get(backend.call(w, "noop"))
    times = []
    for _ in range(ROUND_TRIPS):
        t0 = time.perf_counter()
        backend.get(backend.call(w, "noop"))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def _send_10mb_ms(backend, rounds: int = 10) -> tuple[float, float]:
    """(one call per worker, one broadcast) in ms: a 10 MB float32 array to each of 4 workers, each
    answering with its float64 sum; the two ways alternate round by round (fair on a busy machine)."""
    from unirl.conformance.workers import Echo

    workers = backend.spawn(Echo, [(i,) for i in range(4)])
    array = np.random.default_rng(0).standard_normal(10 * (1 << 20) // 4).astype(np.float32)
    expected = float(np.sum(array, dtype=np.float64))
    ways = (lambda: [backend.call(w, "array_checksum", array) for w in workers],
            lambda: backend.broadcast(workers, "array_checksum", array))
    times: tuple[list, list] = ([], [])
    for i in range(rounds + 1):
        for way, out in zip(ways, times):
            t0 = time.perf_counter()
            sums = backend.get(way())
            if i:  # the first round is warm-up
                out.append(time.perf_counter() - t0)
            if any(s[2] != expected for s in sums):
                raise UnirlError(f"the {backend.name} backend delivered a different array: {sums}")
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3


def _pipelined_tasks_per_s(backend, num_workers: int = 2, in_flight: int = 64, tasks: int = 4000) -> float:
    """Empty tasks per second with `in_flight` calls outstanding on each worker (submit as results come back)."""
    from unirl.conformance.workers import Echo

    workers = backend.spawn(Echo, [(i,) for i in range(num_workers)])
    backend.get([backend.call(w, "noop") for w in workers])
    t0 = time.perf_counter()
    pending = [backend.call(w, "noop") for w in workers for _ in range(in_flight)]
    submitted, done = len(pending), 0
    while done < tasks:
        ready, pending = backend.wait(pending, num_returns=1 if backend.runs_in_driver else len(pending),
                                      timeout=0 if not backend.runs_in_driver else None)
        if not ready:
            ready, pending = backend.wait(pending, num_returns=1)
        backend.get(ready)
        done += len(ready)
        for f in ready:
            if submitted < tasks:
                pending.append(backend.call(workers[f.worker_id % num_workers], "noop"))
                submitted += 1
    backend.get(pending)
    return done / (time.perf_counter() - t0)


def _sampling_steps_per_s(backend, framework: str, worker_counts=(1, 2), rounds: int = 5) -> dict:
    """Median env steps/s of SyncSamples.sample per worker count, measured in alternating rounds.

    Alternating rounds (1 worker, 2 workers, 1, 2, ...) let a busy machine slow both alike, so their ratio stays fair.
    """
    from unirl.execution import SyncSamples, worker_specs
    from unirl.registry import get_algorithm_class

    algo_cls = get_algorithm_class("PPO")
    samplers, weights = {}, None
    for n in worker_counts:
        config = algo_cls.config_class.from_dict({
            "env": "CartPole-v1", "framework": framework, "num_workers": n, "num_envs_per_worker": ENVS_PER_WORKER,
            "train_batch_size": n * ENVS_PER_WORKER * ROLLOUT_LENGTH, "minibatch_size": ENVS_PER_WORKER * ROLLOUT_LENGTH})
        specs = worker_specs(config, algo_cls.policy_spec(config))
        if weights is None:
            weights = algo_cls.build_policy(config, for_learning=False).get_flat_weights()
        samplers[n] = SyncSamples(backend, specs)
        samplers[n].sample(weights)  # warm-up
    rates = {n: [] for n in worker_counts}
    for _ in range(rounds):
        for n in worker_counts:
            t0 = time.perf_counter()
            for _ in range(SAMPLE_ROUNDS):
                samplers[n].sample(weights)
            rates[n].append(n * ENVS_PER_WORKER * ROLLOUT_LENGTH * SAMPLE_ROUNDS / (time.perf_counter() - t0))
    rss = _peak_rss_mb(backend, [w for n in worker_counts for w in samplers[n].workers])
    return {n: statistics.median(r) for n, r in rates.items()}, rss


def _peak_rss_mb(backend, handles) -> float | None:
    """The largest peak resident set (VmHWM) of the processes hosting these workers, in MB; None if unknown
    (workers on other hosts). On the local backend that is the driver's own process."""
    pids = set()
    for h in handles:
        try:
            pids.add(backend.worker_pid(h))
        except Exception:
            return None
    peaks = []
    for pid in pids:
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status") as f:
                peaks += [int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:")]
        except OSError:
            return None
    return max(peaks) if peaks else None


def _end_to_end_steps_per_s(backend_name: str, framework: str, seconds: float = 4.0) -> float:
    """PPO's default config (1 worker, 8 envs), `train()` for about `seconds` after one warm-up
    iteration: env steps/s of sampling and learning together."""
    import unirl

    with unirl.build("PPO", {"env": "CartPole-v1", "framework": framework, "backend": backend_name,
                             "seed": 0}) as algo:
        algo.train()
        steps0, t0 = algo.timesteps_total, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            algo.train()
        return (algo.timesteps_total - steps0) / (time.perf_counter() - t0)


def _ray_round_trips_us(backend, rounds: int = 8, calls: int = 100) -> tuple[float, float]:
    """(backend round trip, bare Ray actor round trip) in µs: `get(call(w, "noop"))` against
    `ray.get(actor.noop.remote())` on a plain zero-CPU actor, in interleaved rounds (fair under load)."""
    import ray

    from unirl.conformance.workers import Echo

    @ray.remote(num_cpus=0)
    class Bare:
        def noop(self):
            return None

    (w,) = backend.spawn(Echo, [(0,)])
    actor = Bare.remote()
    fns = (lambda: backend.get(backend.call(w, "noop")), lambda: ray.get(actor.noop.remote()))
    medians: tuple[list, list] = ([], [])
    try:
        for fn in fns:
            for _ in range(50):
                fn()
        for _ in range(rounds):
            for fn, out in zip(fns, medians):
                times = []
                for _ in range(calls):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                out.append(statistics.median(times))
    finally:
        ray.kill(actor)
    return statistics.median(medians[0]) * 1e6, statistics.median(medians[1]) * 1e6


def measure_backend(backend, frameworks) -> dict:
    """The raw numbers for one started backend (no ratios); framework-dependent ones under `per_framework`."""
    frameworks = [frameworks] if isinstance(frameworks, str) else list(frameworks)
    framework = frameworks[0]
    t0 = time.perf_counter()
    record = {"backend": backend.name, "framework": framework,
              "round_trip_us": _round_trip_us(backend),
              **dict(zip(("send_10mb_to_4_ms", "broadcast_10mb_to_4_ms"), _send_10mb_ms(backend))),
              "tasks_per_s_pipelined": _pipelined_tasks_per_s(backend),
              }
    if backend.name == "ray":
        record["round_trip_us"], record["bare_ray_round_trip_us"] = _ray_round_trips_us(backend)
        record["round_trip_vs_bare_ray"] = record["round_trip_us"] / record["bare_ray_round_trip_us"]
    record["per_framework"] = {}
    for fw in frameworks:
        rates, rss = _sampling_steps_per_s(backend, fw)
        record["per_framework"][fw] = {
            "sampling_1_worker_steps_per_s": rates[1], "sampling_2_workers_steps_per_s": rates[2],
            "sampling_2_vs_1": rates[2] / rates[1], "peak_rss_per_worker_mb": rss,
            "end_to_end_steps_per_s": _end_to_end_steps_per_s(backend.name, fw)}
    record.update(record["per_framework"][framework])  # the first framework's numbers at the top level
    record["seconds"] = time.perf_counter() - t0
    return record


def _measure_in_mpi_job(framework) -> dict:
    from unirl.backends.base import worker_env
    from unirl.backends.mpi import find_mpiexec, launch_command

    mpiexec = find_mpiexec()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "mpi.json")
        code = f"from unirl.benchmarks.backends import mpi_job_main; mpi_job_main({framework!r}, {out!r})"
        cmd = launch_command(mpiexec, 5, [sys.executable, "-c", code])
        env = dict(os.environ)
        env.update(worker_env(1))
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
        if proc.returncode != 0 or not os.path.exists(out):
            raise UnirlError(f"the MPI benchmark job failed (exit code {proc.returncode}): "
                             f"{(proc.stderr or proc.stdout).strip()[-500:]}")
        with open(out) as f:
            return json.load(f)


def mpi_job_main(framework, out_path: str) -> None:
    """Entry point of every rank of the benchmark's MPI job: rank 0 measures, the others serve (inside get_backend)."""
    from unirl.backends import get_backend

    backend = get_backend("mpi")
    try:
        record = measure_backend(backend, framework)
    finally:
        backend.shutdown()
    with open(out_path, "w") as f:
        json.dump(record, f)


def _measure(name: str, framework) -> dict:
    if name == "mpi":
        return _measure_in_mpi_job(framework)
    from unirl.backends import get_backend

    backend = get_backend(name)
    try:
        return measure_backend(backend, framework)
    finally:
        backend.shutdown()


RATIO_KEYS = ("round_trip_us", "send_10mb_to_4_ms", "broadcast_10mb_to_4_ms", "tasks_per_s_pipelined",
              "sampling_1_worker_steps_per_s", "sampling_2_workers_steps_per_s", "end_to_end_steps_per_s")
MATRIX_RATIO_KEYS = ("end_to_end_steps_per_s", "sampling_1_worker_steps_per_s", "sampling_2_workers_steps_per_s",
                     "learner_samples_per_s", "act_1_us", "act_64_us", "peak_rss_per_worker_mb")


def bench_backends(backends: list[str], framework, console=None) -> list[dict]:
    """One record per backend (local first, the reference), with each number also as a ratio to local's.

    `framework` may be a list: the framework-dependent numbers (sampling, end to end, worker RSS) are then
    measured for each, under the record's `per_framework`; the top-level ones are the first framework's.
    """
    from unirl.backends import get_backend_class

    names = ["local"] + [b for b in backends if b != "local"]
    for name in names:
        if name != "mpi":
            get_backend_class(name)  # a missing extra is a clear error before anything runs
    records = []
    for name in names:
        if console is not None:
            console.print(f"measuring the {name} backend with {framework} ...")
        records.append(_measure(name, framework))
    ref = records[0]
    for r in records:
        for k in RATIO_KEYS:
            r[k + "_vs_local"] = r[k] / ref[k] if ref[k] else float("nan")
    return records


def framework_backend_matrix(backend_records: list[dict], framework_records: list[dict] | None = None,
                             reference=("torch", "local")) -> list[dict]:
    """One row per framework x backend: every number the issue's table asks for, each also as a ratio to
    the torch/local row (`..._vs_ref`) measured in the same run."""
    fw_by_name = {r["framework"]: r for r in framework_records or []}
    rows = []
    for b in backend_records:
        for fw, numbers in b.get("per_framework", {b["framework"]: b}).items():
            row = {"framework": fw, "backend": b["backend"]}
            for k in ("end_to_end_steps_per_s", "sampling_1_worker_steps_per_s", "sampling_2_workers_steps_per_s",
                      "sampling_2_vs_1", "peak_rss_per_worker_mb"):
                row[k] = numbers.get(k)
            f = fw_by_name.get(fw, {})
            for k in ("learner_samples_per_s", "act_1_us", "act_64_us"):
                row[k] = f.get(k)
            for k in ("round_trip_us", "broadcast_10mb_to_4_ms", "send_10mb_to_4_ms", "tasks_per_s_pipelined",
                      "round_trip_vs_bare_ray"):
                row[k] = b.get(k)
            rows.append(row)
    ref = next((r for r in rows if (r["framework"], r["backend"]) == tuple(reference)), None)
    for r in rows:
        for k in MATRIX_RATIO_KEYS:
            r[k + "_vs_ref"] = (r[k] / ref[k] if ref is not None and r.get(k) is not None and ref.get(k)
                                else None)
    return rows


def print_matrix_table(rows: list[dict], console) -> None:
    from rich.table import Table

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    def ratio(r, k):
        v = r.get(k + "_vs_ref")
        return "" if v is None else f" ({v:.2f}x)"

    table = Table(title="framework x backend (ratios to torch/local in parentheses, same run)")
    for col in ("framework", "backend", "end to end steps/s", "sampling 1 w", "2 w", "2 vs 1", "learner samples/s",
                "act 1 µs", "act 64 µs", "round trip µs", "10 MB bcast ms", "tasks/s", "peak RSS MB"):
        table.add_column(col, justify="left" if col in ("framework", "backend") else "right")
    for r in rows:
        table.add_row(r["framework"], r["backend"],
                      num(r["end_to_end_steps_per_s"], ",.0f") + ratio(r, "end_to_end_steps_per_s"),
                      num(r["sampling_1_worker_steps_per_s"], ",.0f"),
                      num(r["sampling_2_workers_steps_per_s"], ",.0f"), num(r["sampling_2_vs_1"], ".2f") + "x",
                      num(r["learner_samples_per_s"], ",.0f") + ratio(r, "learner_samples_per_s"),
                      num(r["act_1_us"], ",.0f"), num(r["act_64_us"], ",.0f"),
                      num(r["round_trip_us"], ",.0f"), num(r["broadcast_10mb_to_4_ms"], ",.1f"),
                      num(r["tasks_per_s_pipelined"], ",.0f"), num(r["peak_rss_per_worker_mb"], ",.0f"))
    console.print(table)


def print_backend_table(records: list[dict], console) -> None:
    from rich.table import Table

    table = Table(title="backends (ratios to local in parentheses; latency: lower is better, steps/s: higher)")
    for col in ("backend", "round trip µs", "10 MB to 4 workers ms", "10 MB broadcast ms", "tasks/s pipelined",
                "sampling 1 worker steps/s", "sampling 2 workers steps/s", "2 vs 1 workers"):
        table.add_column(col, justify="right" if col != "backend" else "left")
    for r in records:
        bare = f" [{r['round_trip_vs_bare_ray']:.2f}x bare Ray]" if "round_trip_vs_bare_ray" in r else ""
        table.add_row(
            r["backend"],
            f"{r['round_trip_us']:,.0f} ({r['round_trip_us_vs_local']:.1f}x){bare}",
            f"{r['send_10mb_to_4_ms']:,.1f} ({r['send_10mb_to_4_ms_vs_local']:.1f}x)",
            f"{r['broadcast_10mb_to_4_ms']:,.1f} ({r['broadcast_10mb_to_4_ms_vs_local']:.1f}x)",
            f"{r['tasks_per_s_pipelined']:,.0f} ({r['tasks_per_s_pipelined_vs_local']:.2f}x)",
            f"{r['sampling_1_worker_steps_per_s']:,.0f} ({r['sampling_1_worker_steps_per_s_vs_local']:.2f}x)",
            f"{r['sampling_2_workers_steps_per_s']:,.0f} ({r['sampling_2_workers_steps_per_s_vs_local']:.2f}x)",
            f"{r['sampling_2_vs_1']:.2f}x")
    console.print(table)
