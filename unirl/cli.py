"""The `unirl` command line: train, evaluate (and, as they land, bench and conformance)."""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys

from unirl.errors import UnirlError, did_you_mean

STOP_KEYS = ("timesteps_total", "training_iteration", "episodes_total", "time_total_s", "episode_return_mean")


def parse_json_flag(flag: str, text: str) -> dict:
    """A JSON object from a command-line flag, or an error that points at the bad character."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        pointer = " " * (e.pos + 2) + "^"
        raise UnirlError(f"{flag} is not valid JSON: {e.msg} at position {e.pos} (line {e.lineno} column "
                         f"{e.colno}):\n  {text}\n{pointer}") from None
    if not isinstance(value, dict):
        raise UnirlError(f"{flag} must be a JSON object like '{{\"key\": value}}', got {text}.")
    return value


def check_stop(stop: dict) -> dict:
    for key, value in stop.items():
        if key not in STOP_KEYS:
            raise UnirlError(f"unknown stop criterion `{key}`." + did_you_mean(key, STOP_KEYS)
                             + f" Valid criteria: {', '.join(STOP_KEYS)}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnirlError(f"stop criterion `{key}` must be a number, got {value!r}.")
    return stop


def should_stop(result: dict, stop: dict) -> bool:
    values = dict(result, training_iteration=result["iteration"])
    return any(values.get(k) is not None and not (isinstance(values[k], float) and math.isnan(values[k]))
               and values[k] >= v for k, v in stop.items())


def build_config(args) -> dict:
    config = parse_json_flag("--config", args.config)
    for key in ("env", "framework", "backend", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if getattr(args, "address", None):
        config.setdefault("backend_options", {})["address"] = args.address
    return config


def _fmt(v, spec=".1f"):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def iteration_line(r: dict) -> str:
    return (f"iter {r['iteration']:4d}  steps {r['timesteps_total']:7d}  "
            f"return {_fmt(r['episode_return_mean']):>5} [{_fmt(r['episode_return_min'], '.0f')}, "
            f"{_fmt(r['episode_return_max'], '.0f')}]  episodes {r['episodes_total']:5d}  "
            f"loss {_fmt(r.get('learner/total_loss'), '.3f')}  {r['env_steps_per_s']:,.0f} steps/s  "
            f"{r['time_total_s']:.1f} s")


def cmd_train(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    import unirl
    from unirl.results import RunLogger

    config = build_config(args)
    stop = check_stop(parse_json_flag("--stop", args.stop))
    algo_cls = unirl.get_algorithm_class(args.run)
    full_config = algo_cls.config_class.from_dict(config)
    from unirl.backends import get_backend_class

    # A backend may need to set up the processes first (MPI relaunches the command under mpiexec
    # and turns ranks > 0 into workers); it returns an exit code to end with, or None to go on
    # as the driver. It runs before anything is printed or written, so only the driver does that.
    prepare = getattr(get_backend_class(full_config.backend), "prepare_cli", None)
    if prepare is not None:
        code = prepare(full_config, sys.argv)
        if code is not None:
            return code
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = args.output or os.path.join("runs", f"{args.run}_{full_config.env}_{full_config.framework}_"
                                                  f"{full_config.backend}_seed{full_config.seed}_{stamp}")
    console = Console(stderr=False, quiet=args.quiet)
    console.print(f"[bold]unirl train[/bold] {args.run} on {full_config.env} with {full_config.framework} "
                  f"on the {full_config.backend} backend, {full_config.num_workers} worker(s) x "
                  f"{full_config.num_envs_per_worker} envs, seed {full_config.seed}; results in {logdir}")
    logger = RunLogger(logdir, {"run": args.run, "config": full_config.to_dict(), "stop": stop})
    algo = algo_cls(full_config)
    from unirl.kernels import settings

    with open(os.path.join(logdir, "kernels.json"), "w") as f:
        json.dump(settings(), f, indent=1, sort_keys=True)  # the kernel pins in effect (see docs/determinism.md)
    primary = next((k for k in ("timesteps_total", "training_iteration") if k in stop), None)
    try:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                      TextColumn("{task.completed:,.0f}/{task.total:,.0f}"), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console, transient=True, disable=args.quiet) as progress:
            task = progress.add_task(primary or "iterations", total=stop.get(primary, None))
            while True:
                result = algo.train()
                logger.log(result)
                progress.console.print(iteration_line(result), soft_wrap=True, highlight=False)
                progress.update(task, completed=result["timesteps_total"] if primary == "timesteps_total"
                                else result["iteration"])
                if args.checkpoint_freq and result["iteration"] % args.checkpoint_freq == 0:
                    algo.save(os.path.join(logdir, "checkpoints", f"checkpoint_{result['iteration']:06d}"))
                if should_stop(result, stop):
                    break
        path = algo.save(os.path.join(logdir, "checkpoints", f"checkpoint_{algo.iteration:06d}"))
        console.print(f"checkpoint: {path}")
        if args.evaluation_episodes != 0:
            ev = algo.evaluate(args.evaluation_episodes)
            with open(os.path.join(logdir, "evaluation.json"), "w") as f:
                json.dump(ev, f, indent=1)
            console.print(f"evaluation: greedy mean return {ev['evaluation/episode_return_mean']:.1f} over "
                          f"{ev['evaluation/episodes']} episodes; weights digest {ev['weights_digest']}")
    except KeyboardInterrupt:
        console.print("interrupted; shutting down workers")
        return 130
    finally:
        algo.stop()
        logger.close()
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from unirl.checkpoint import load_checkpoint
    from unirl.evaluation import evaluate_policy
    from unirl.registry import get_algorithm_class

    arrays, state = load_checkpoint(args.checkpoint)
    algo_cls = get_algorithm_class(state["algorithm"])
    config = dict(state["config"])
    if args.framework:
        config["framework"] = args.framework
    config = algo_cls.config_class.from_dict(config)
    policy = algo_cls.build_policy(config, for_learning=False)
    policy.set_state(arrays)
    seed = config.seed if args.seed is None else args.seed
    returns = evaluate_policy(policy, config.env, config.env_config, args.episodes, seed)
    out = {"checkpoint": args.checkpoint, "framework": config.framework, "episodes": args.episodes,
           "episode_return_mean": float(np.mean(returns)), "episode_return_std": float(np.std(returns)),
           "episode_returns": returns.tolist()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"mean return {out['episode_return_mean']:.2f} (std {out['episode_return_std']:.2f}) over "
          f"{args.episodes} greedy episodes of {config.env} with {config.framework}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="unirl", description="Unified, scalable, reproducible reinforcement learning.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an algorithm; writes a run directory")
    t.add_argument("--run", default="PPO", help="algorithm name (default PPO)")
    t.add_argument("--env", help="Gymnasium env id (default: the config's, CartPole-v1)")
    t.add_argument("--framework", help="torch | tf | jax (default torch)")
    t.add_argument("--backend", help="local | multiprocessing | ray | mpi (default local)")
    t.add_argument("--config", default="{}", help="algorithm config as a JSON object")
    t.add_argument("--address", help="Ray: join the cluster at this address (backend_options.address), e.g. auto or HOST:6379")
    t.add_argument("--stop", default='{"timesteps_total": 100000}',
                   help=f"stop when any metric reaches its value, JSON; keys: {', '.join(STOP_KEYS)}")
    t.add_argument("--seed", type=int, help="run seed (default 0)")
    t.add_argument("--output", help="run directory (default runs/<algo>_<env>_<framework>_<backend>_seed<s>_<time>)")
    t.add_argument("--checkpoint-freq", type=int, default=0, help="checkpoint every N iterations (0: only at the end)")
    t.add_argument("--evaluation-episodes", type=int, default=None,
                   help="greedy episodes evaluated at the end (default: the config's evaluation_num_episodes; 0 skips)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-iteration lines")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="mean greedy return of a checkpoint")
    e.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    e.add_argument("--episodes", type=int, default=20, help="episodes to run (default 20)")
    e.add_argument("--framework", help="load the weights into this framework (default: the one that trained)")
    e.add_argument("--seed", type=int, help="evaluation seed (default: the run's)")
    e.add_argument("--json", help="also write the returns to this JSON file")
    e.set_defaults(func=cmd_evaluate)

    from unirl import benchmarks

    b = sub.add_parser("bench", help="measure frameworks and backends (ratios to torch / local)")
    benchmarks.add_arguments(b)
    b.set_defaults(func=benchmarks.run)

    from unirl.conformance import cli as conformance_cli

    c = sub.add_parser("conformance", help="prove reproducibility across frameworks, backends and worker counts")
    conformance_cli.add_arguments(c)
    c.set_defaults(func=conformance_cli.run)
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except UnirlError as e:
        print(f"unirl: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
