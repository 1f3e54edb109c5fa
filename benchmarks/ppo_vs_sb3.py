"""PPO on CartPole-v1: unirl vs Stable-Baselines3 (rl-zoo hyperparameters), wall time and env steps to a
mean return of 475 over the last 20 training episodes, measured in one run on this machine.

    python benchmarks/ppo_vs_sb3.py --seeds 0 1 2 [--json FILE] [--config-file FILE] [--config JSON]

unirl runs the tuned CartPole config in benchmarks/configs/ppo_cartpole.json for every seed (the
library's defaults stay generic, as rl-zoo keeps its tuned settings beside SB3); `--config-file ""`
runs the defaults, `--config` overrides keys on top. Needs the `bench` extra (stable-baselines3).
Each run has a fresh process of its own (SB3's without unirl's kernel pins); SB3 runs torch
with one intra-op thread, unirl the framework its config names (JAX in the tuned config: its
compiled steps come from JAX's persistent compilation cache once the warm-up run has filled it).
The clock starts when the algorithm object is built (imports and one short warm-up run of each
library excluded) and stops at the end of the iteration (unirl) or env step (SB3) where the
criterion is first met. Beside wall time, each run's CPU time (`time.process_time`, the process's
own, all its threads) is reported: on a machine shared with other jobs it is the steadier
comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

TARGET = 475.0
WINDOW = 20
#: unirl's tuned PPO config for CartPole-v1 (see the file's "_doc" key), used for every seed.
CONFIG_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "ppo_cartpole.json")


def load_config(path: str | None) -> dict:
    """A unirl config from a JSON file, without its documentation keys (those starting with "_")."""
    if not path:
        return {}
    with open(path) as f:
        config = json.load(f)
    return {k: v for k, v in config.items() if not k.startswith("_")}


def sb3_stop_callback(t0: float, c0: float, target: float = TARGET, window: int = WINDOW):
    """An SB3 callback that stops training once the last `window` training episodes average >= `target`, and
    keeps (wall s, env steps, CPU s) since (t0, c0) at that step in `.hit` (None if never reached)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class Stop(BaseCallback):
        def __init__(self):
            super().__init__()
            self.returns, self.hit = [], None

        def _on_step(self) -> bool:
            for info in self.locals["infos"]:
                if "episode" in info:
                    self.returns.append(info["episode"]["r"])
            if len(self.returns) >= window and np.mean(self.returns[-window:]) >= target:
                self.hit = (time.perf_counter() - t0, self.num_timesteps, time.process_time() - c0)
                return False
            return True

    return Stop()


def sb3_missing(skip_sb3: bool) -> bool:
    """True (after printing the one sentence naming the `bench` extra) when SB3 is needed but not installed."""
    import importlib.util
    import sys

    from unirl.errors import missing_extra

    if skip_sb3 or importlib.util.find_spec("stable_baselines3") is not None:
        return False
    sentence = str(missing_extra("stable_baselines3", "bench", "the comparison with Stable-Baselines3"))
    print(f"error: {sentence.rstrip('.')} (or pass --skip-sb3).", file=sys.stderr)
    return True


def run_sb3(seed: int, budget: int) -> dict:
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)

    def linear(v):
        return lambda progress_remaining: progress_remaining * v

    t0, c0 = time.perf_counter(), time.process_time()
    env = make_vec_env("CartPole-v1", n_envs=8, seed=seed)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=256, gae_lambda=0.8, gamma=0.98, n_epochs=20,
                ent_coef=0.0, learning_rate=linear(1e-3), clip_range=linear(0.2), seed=seed, device="cpu", verbose=0)
    cb = sb3_stop_callback(t0, c0)
    model.learn(total_timesteps=budget, callback=cb)
    wall, steps, cpu = cb.hit if cb.hit else (float("nan"), None, float("nan"))
    return {"library": "sb3", "seed": seed, "wall_s": wall, "cpu_s": cpu, "steps": steps,
            "steps_per_s": steps / wall if steps else None}


def train_until_target(algo, budget: int, t0: float, c0: float, target: float = TARGET, window: int = WINDOW):
    """Train `algo` until the last `window` training episodes average >= `target` or `budget` env steps pass:
    ((wall s, env steps, CPU s) since (t0, c0) when the target was met, else None; the episode returns)."""
    returns = []
    while algo.timesteps_total < budget:
        result = algo.train()
        returns.extend(result["episode_returns_this_iter"])
        if len(returns) >= window and np.mean(returns[-window:]) >= target:
            return (time.perf_counter() - t0, result["timesteps_total"], time.process_time() - c0), returns
    return None, returns


def run_unirl(seed: int, budget: int, config: dict) -> dict:
    import unirl

    t0, c0 = time.perf_counter(), time.process_time()
    algo = unirl.build("PPO", dict(config, seed=seed))
    try:
        hit, _ = train_until_target(algo, budget, t0, c0)
    finally:
        algo.stop()
    wall, steps, cpu = hit if hit else (float("nan"), None, float("nan"))
    return {"library": "unirl", "seed": seed, "wall_s": wall, "cpu_s": cpu, "steps": steps,
            "steps_per_s": steps / wall if steps else None}


def warm_up(library: str, config: dict) -> None:
    """One short untimed run, so lazy initialisation (kernels, compilation, the gymnasium registry) is
    not charged to the first timed run."""
    if library == "unirl":
        run_unirl(123, 256, config)
    else:
        run_sb3(123, 256)


def run_one(library: str, seed: int, budget: int, config: dict, warm_up, run_sb3, run_unirl) -> int:
    """The --run-one mode (a child of run_in_fresh_process): a warm-up run, then one timed run of
    `library`, its record printed as the last line of output."""
    warm_up(library, config)
    print(json.dumps(run_sb3(seed, budget) if library == "sb3" else run_unirl(seed, budget, config)))
    return 0


def child_env(library: str) -> dict:
    """The environment of a run's process: SB3's without the kernel pins unirl set in this process
    (a value the user set stays: it applies to both libraries)."""
    env = dict(os.environ)
    if library == "sb3":
        from unirl import kernels

        for name, entry in kernels.settings().items():
            if name in kernels.PINNED_ENV and entry["set_by"] == "unirl":
                env.pop(name, None)
    return env


def comparison_args(description: str, argv, default_budget: int, default_config: str):
    """(parsed arguments, the unirl config) of a side-by-side script: --seeds, --budget, --config (a JSON file or a
    JSON string; keys starting with "_" are documentation), --skip-sb3, --json and the hidden --run-one."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=default_budget, help="env steps before giving up")
    p.add_argument("--config", default=default_config, help="unirl config: a JSON file or a JSON string")
    p.add_argument("--skip-sb3", action="store_true")
    p.add_argument("--json", help="write the records here")
    p.add_argument("--run-one", choices=("sb3", "unirl"), help=argparse.SUPPRESS)  # a child of run_in_fresh_process
    args = p.parse_args(argv)
    if os.path.exists(args.config):
        with open(args.config) as f:
            config = json.load(f)
    else:
        config = json.loads(args.config)
    return args, {k: v for k, v in config.items() if not k.startswith("_")}


def sb3_greedy_mean(model, env_id: str, seed: int, episodes: int) -> float:
    """An SB3 model's mean greedy return over `episodes` episodes seeded 10000 + 100 seed + episode."""
    import gymnasium as gym

    env = gym.make(env_id)
    discrete = isinstance(env.action_space, gym.spaces.Discrete)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + ep)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, r, term, trunc, _ = env.step(int(action) if discrete else action)
            total += r
            done = term or trunc
        returns.append(total)
    env.close()
    return float(np.mean(returns))


def write_records(path: str | None, records: list, summary: dict, config: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump({"records": records, "summary": summary, "unirl_config": config}, f, indent=1)


def run_comparison(script: str, args, config: dict, warm_up, run_sb3, run_unirl):
    """The records of each seed and library (SB3 first unless --skip-sb3), each run in a fresh process and printed as
    it comes; or an exit code: 0 in a child (--run-one: its one run done), 2 when SB3 is missing."""
    if args.run_one:
        return run_one(args.run_one, args.seeds[0], args.budget, config, warm_up, run_sb3, run_unirl)
    if sb3_missing(args.skip_sb3):
        return 2
    records = []
    for seed in args.seeds:
        for lib in ("sb3", "unirl") if not args.skip_sb3 else ("unirl",):
            records.append(run_in_fresh_process(script, ["--run-one", lib, "--seeds", str(seed), "--budget",
                                                         str(args.budget), "--config", json.dumps(config)], lib))
            print(json.dumps(records[-1]), flush=True)
    return records


def run_in_fresh_process(script: str, args: list[str], library: str) -> dict:
    """Run `script args` (its --run-one mode: one timed run of `library`, imports and a warm-up run
    excluded from its clock) in a process of its own, and return the record it prints last. Each
    library gets a clean process: SB3 does not run under unirl's kernel pins (the cross-vendor MKL
    branch costs torch ~10%), nor unirl beside SB3's imports."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, os.path.abspath(script)] + args, capture_output=True, text=True,
                         timeout=1800, env=child_env(library))
    if out.returncode != 0:
        raise RuntimeError(f"{library} ({' '.join(args)}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_one_in_fresh_process(library: str, seed: int, budget: int, config: dict) -> dict:
    return run_in_fresh_process(__file__, ["--run-one", library, "--seeds", str(seed), "--budget", str(budget),
                                           "--config-file", "", "--config", json.dumps(config)], library)


def main(argv=None) -> int:
    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=100_000, help="env steps before giving up")
    p.add_argument("--config-file", default=CONFIG_FILE,
                   help="unirl PPO config (JSON file; \"\" for the library defaults)")
    p.add_argument("--config", default="{}", help="unirl PPO config overrides on top of the file (JSON)")
    p.add_argument("--skip-sb3", action="store_true")
    p.add_argument("--json", help="write the records here")
    p.add_argument("--run-one", choices=("sb3", "unirl"), help=argparse.SUPPRESS)  # the child of run_in_fresh_process
    args = p.parse_args(argv)
    config = dict(load_config(args.config_file), **json.loads(args.config))
    if args.run_one:
        return run_one(args.run_one, args.seeds[0], args.budget, config, warm_up, run_sb3, run_unirl)
    if sb3_missing(args.skip_sb3):
        return 2
    records = []
    for seed in args.seeds:
        if not args.skip_sb3:
            records.append(run_one_in_fresh_process("sb3", seed, args.budget, config))
        records.append(run_one_in_fresh_process("unirl", seed, args.budget, config))
    table = Table(title=f"PPO CartPole-v1: time and steps until the last {WINDOW} training episodes average >= {TARGET:g}")
    for col in ("library", "seed", "wall s", "cpu s", "env steps", "env steps/s"):
        table.add_column(col)
    for r in records:
        table.add_row(r["library"], str(r["seed"]), f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}", str(r["steps"]),
                      f"{r['steps_per_s']:,.0f}" if r["steps_per_s"] else "-")
    console = Console()
    console.print(table)
    summary = {}
    for lib in ("sb3", "unirl"):
        walls = [r["wall_s"] for r in records if r["library"] == lib]
        steps = [r["steps"] for r in records if r["library"] == lib and r["steps"] is not None]
        if walls:
            summary[lib] = {"median_wall_s": statistics.median(walls),
                            "median_cpu_s": statistics.median(r["cpu_s"] for r in records if r["library"] == lib),
                            "median_steps": statistics.median(steps) if steps else None}
    if "sb3" in summary and "unirl" in summary:
        summary["speedup_wall"] = summary["sb3"]["median_wall_s"] / summary["unirl"]["median_wall_s"]
        summary["speedup_cpu"] = summary["sb3"]["median_cpu_s"] / summary["unirl"]["median_cpu_s"]
        console.print(f"median wall time: sb3 {summary['sb3']['median_wall_s']:.2f} s, unirl "
                      f"{summary['unirl']['median_wall_s']:.2f} s -> unirl is {summary['speedup_wall']:.2f}x faster")
        console.print(f"median CPU time of the process (what other jobs on the machine do not inflate): sb3 "
                      f"{summary['sb3']['median_cpu_s']:.2f} s, unirl {summary['unirl']['median_cpu_s']:.2f} s -> "
                      f"{summary['speedup_cpu']:.2f}x")
    else:
        console.print(summary)
    write_records(args.json, records, summary, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
