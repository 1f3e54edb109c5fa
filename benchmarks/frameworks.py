"""`unirl bench` framework section: learner samples/s and acting latency per framework, as ratios to torch.

Every framework runs the same thing in one process, after warm-up (compilation):

- learner: samples/s through one PPO epoch at PPO's default batch (train_batch_size 256 in
  minibatches of 128), through the real path: `ops.take_rows` gathers and
  `policy.learn_on_batch`, ending with the weights fetched to NumPy (so asynchronous
  frameworks finish their work inside the timing);
- acting: median latency of `policy.compute_actions` (forward pass, sampling from per-env
  noise, back to NumPy) on 1 and on 64 observations, in microseconds.

Measurements go round-robin over the frameworks in several rounds, so a busy machine slows all
of them alike and the ratios stay meaningful; the medians over rounds are reported.
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from unirl import sample_batch as sb

REFERENCE = "torch"


class _Subject:
    """One framework's PPO algorithm with a postprocessed default-size batch, ready to time."""

    def __init__(self, framework: str, seed: int = 0):
        import unirl

        t0 = time.perf_counter()
        self.framework = framework
        self.algo = unirl.build("PPO", {"env": "CartPole-v1", "framework": framework, "seed": seed})
        self.policy = self.algo.policy
        self.config = self.algo.config
        rows = self.algo.postprocess(self.algo.sampler.sample(self.policy.get_flat_weights()))
        keys = (sb.OBS, sb.ACTIONS, sb.LOGP, sb.ADVANTAGES, sb.VALUE_TARGETS)
        self.rows = {k: rows[k] for k in keys}
        self.hp = self.policy.hp_tensors(self.algo.hyperparameters())
        self.n = len(rows[sb.ADVANTAGES])
        self.rng = np.random.default_rng(seed)
        obs = np.random.default_rng(seed).standard_normal((64, rows[sb.OBS].shape[1])).astype(np.float32)
        self.obs = {1: obs[:1].copy(), 64: obs}
        k = self.policy.dist.noise_per_step
        self.noise = {1: np.full((1, k), 0.5), 64: np.tile(np.linspace(0.01, 0.99, 64)[:, None], (1, k))}
        for _ in range(3):  # warm-up: traces and compiles every path timed below
            self.epoch_seconds()
            for k in self.obs:
                self.act_seconds(k, 20)
        self.warmup_s = time.perf_counter() - t0

    def epoch_seconds(self) -> float:
        """One epoch of PPO's learner as PPO runs it (Policy.learn_epochs), weights fetched at the end."""
        t0 = time.perf_counter()
        self.policy.learn_epochs(self.rows, self.hp, 1, self.config.minibatch_size, self.rng)
        self.policy.get_flat_weights()
        return time.perf_counter() - t0

    def act_seconds(self, num_obs: int, calls: int) -> list[float]:
        obs, u, act = self.obs[num_obs], self.noise[num_obs], self.policy.compute_actions
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            act(obs, u)
            times.append(time.perf_counter() - t0)
        return times

    def close(self) -> None:
        self.algo.stop()


def bench_frameworks(frameworks: list[str], console=None, rounds: int = 5, epochs_per_round: int = 10,
                     calls_per_round: int = 400) -> list[dict]:
    """One record per framework (torch added as the reference if missing); see the module docstring."""
    from unirl.errors import UnirlError

    frameworks = list(dict.fromkeys(frameworks))
    if not frameworks:
        raise UnirlError("no framework to benchmark; install one with `pip install unirl[torch]`.")
    measured = frameworks if REFERENCE in frameworks or not installed(REFERENCE) else [REFERENCE] + frameworks
    subjects = {}
    from unirl.policy import clear_compiled

    clear_compiled()  # each subject's warm-up compiles its own functions (and its trace counts are its own)
    try:
        for fw in measured:
            if console is not None:
                console.print(f"warming up {fw} ...")
            subjects[fw] = _Subject(fw)
        epochs = {fw: [] for fw in measured}
        act = {fw: {1: [], 64: []} for fw in measured}
        for r in range(rounds):
            if console is not None:
                console.print(f"round {r + 1}/{rounds}")
            for fw, s in subjects.items():
                epochs[fw] += [s.epoch_seconds() for _ in range(epochs_per_round)]
                for k in (1, 64):
                    act[fw][k] += s.act_seconds(k, calls_per_round)
        records = []
        for fw in measured:
            s = subjects[fw]
            records.append({
                "framework": fw,
                "reference": fw == REFERENCE and fw not in frameworks,
                "learner_samples_per_s": s.n / statistics.median(epochs[fw]),
                "learner_epoch_ms": 1e3 * statistics.median(epochs[fw]),
                "act_1_us": 1e6 * statistics.median(act[fw][1]),
                "act_64_us": 1e6 * statistics.median(act[fw][64]),
                "warmup_s": s.warmup_s,
                "train_batch_size": s.n,
                "minibatch_size": s.config.minibatch_size,
                "num_threads": s.config.num_threads,
                "epochs_timed": len(epochs[fw]),
                "act_calls_timed": len(act[fw][1]),
                "trace_counts": {name: s.policy.adapter.trace_count(fn) for name, fn in
                                 (("learn_step", s.policy._learn_step), ("learn_steps", s.policy._learn_steps),
                                  ("policy_out", s.policy._policy_out),
                                  ("forward", s.policy._forward)) if fn is not None},
            })
    finally:
        for s in subjects.values():
            s.close()
    ref = next((r for r in records if r["framework"] == REFERENCE), None)
    for r in records:
        if ref is None:
            r.update(learner_vs_torch=None, act_1_vs_torch=None, act_64_vs_torch=None)
            continue
        r["learner_vs_torch"] = r["learner_samples_per_s"] / ref["learner_samples_per_s"]
        r["act_1_vs_torch"] = r["act_1_us"] / ref["act_1_us"]
        r["act_64_vs_torch"] = r["act_64_us"] / ref["act_64_us"]
    return records


def installed(framework: str) -> bool:
    """Whether the package `framework` needs is installed (looked for, not imported)."""
    import importlib.util

    from unirl.frameworks import FRAMEWORKS

    return framework in FRAMEWORKS and importlib.util.find_spec(FRAMEWORKS[framework][1]) is not None


def print_framework_table(records: list[dict], console) -> None:
    """The records as a rich table: throughput (higher is better) and latency (lower is better) with ratios."""
    from rich.table import Table

    def ratio(x):
        return "-" if x is None else f"{x:.2f}x"

    table = Table(title="frameworks: PPO learner samples/s and acting latency, ratios to torch (same run)")
    table.add_column("framework", no_wrap=True)
    table.add_column("samples/s", justify="right", no_wrap=True)
    for header in ("x torch", "act 1 obs us", "x torch", "act 64 obs us", "x torch", "warm s"):
        table.add_column(header, justify="right")
    for r in records:
        name = r["framework"] + ("*" if r.get("reference") else "")
        table.add_row(name, f"{r['learner_samples_per_s']:,.0f}", ratio(r["learner_vs_torch"]),
                      f"{r['act_1_us']:,.0f}", ratio(r["act_1_vs_torch"]),
                      f"{r['act_64_us']:,.0f}", ratio(r["act_64_vs_torch"]), f"{r['warmup_s']:.1f}")
    console.print(table)
    if records:
        r = records[0]
        console.print(f"learner: one epoch of {r['train_batch_size']} samples in minibatches of {r['minibatch_size']} "
                      f"(median of {r['epochs_timed']} epochs); acting: compute_actions, median of "
                      f"{r['act_calls_timed']} calls; {r['num_threads']} thread(s) per framework. Learner: higher "
                      f"is better; latency ratios: lower is better."
                      + (" * measured as the reference only." if any(x.get("reference") for x in records) else ""))
