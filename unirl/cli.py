"""The `unirl` command line: train, evaluate (and, as they land, bench and conformance)."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import sys

from unirl.errors import UnirlError, WorkerDiedError, WorkerError, did_you_mean

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


def check_stop(stop: dict, forever: bool = False) -> dict:
    """`stop` if every key is a known stop criterion with a finite number; `{}` only with `forever`."""
    for key, value in stop.items():
        if key not in STOP_KEYS:
            raise UnirlError(f"unknown stop criterion `{key}`." + did_you_mean(key, STOP_KEYS)
                             + f" Valid criteria: {', '.join(STOP_KEYS)}.")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UnirlError(f"stop criterion `{key}` must be a finite number, got {value!r}.")
    if not stop and not forever:
        raise UnirlError("--stop has no criterion, so the run would never stop; give one such as "
                         "'{\"timesteps_total\": 100000}', or pass --forever to train until Ctrl-C / SIGTERM.")
    return stop


def should_stop(result: dict, stop: dict) -> bool:
    """Whether any stop criterion has reached its value in `result` (a NaN never reaches one)."""
    values = dict(result, training_iteration=result["iteration"])
    return any(values.get(k) is not None and not (isinstance(values[k], float) and math.isnan(values[k]))
               and values[k] >= v for k, v in stop.items())


#: Keys of a config file (`unirl train -f FILE`) that are not algorithm config keys.
FILE_KEYS = ("run", "stop")


def strip_comments(value):
    """`value` without the keys that start with "_" (comments in a config file), at every depth."""
    if isinstance(value, dict):
        return {k: strip_comments(v) for k, v in value.items() if not (isinstance(k, str) and k.startswith("_"))}
    if isinstance(value, list):
        return [strip_comments(v) for v in value]
    return value


def read_config_file(path: str) -> dict:
    """The contents of a config file for `unirl train -f`: a YAML (.yaml, .yml) or JSON mapping of config
    keys, plus optionally `run` (the algorithm) and `stop` (stop criteria); keys starting with "_" are
    comments and are dropped, at every depth.

    Raises:
        UnirlError: the file is missing, is not valid YAML or JSON (with the line and column), or is not a
            mapping.
    """
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise UnirlError(f"cannot read the config file `{path}`: {e.strerror or e}.") from None
    if path.lower().endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError:
            raise UnirlError("reading a YAML config file needs PyYAML: pip install pyyaml "
                             "(or give the config as a .json file).") from None
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            raise UnirlError(f"the config file `{path}` is not valid YAML{where}: "
                             f"{getattr(e, 'problem', None) or e}.") from None
    else:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise UnirlError(f"the config file `{path}` is not valid JSON: {e.msg} at line {e.lineno} column "
                             f"{e.colno}.") from None
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise UnirlError(f"the config file `{path}` must hold a mapping of config keys (such as `lr: 0.001`), "
                         f"got a {type(value).__name__}.")
    return strip_comments(value)


def file_settings(args) -> dict:
    """What `-f FILE` gives (empty without it): {"run": ..., "stop": ..., "config": {...}}, each only if set."""
    path = getattr(args, "file", None)
    if not path:
        return {}
    data = read_config_file(path)
    out = {"config": {k: v for k, v in data.items() if k not in FILE_KEYS}}
    if "run" in data:
        if not isinstance(data["run"], str):
            raise UnirlError(f"`run` in the config file `{path}` must be an algorithm name such as PPO, "
                             f"got {data['run']!r}.")
        out["run"] = data["run"]
    if "stop" in data:
        if not isinstance(data["stop"], dict):
            raise UnirlError(f"`stop` in the config file `{path}` must be a mapping such as "
                             f"{{timesteps_total: 100000}}, got {data['stop']!r}.")
        out["stop"] = data["stop"]
    return out


def build_config(args) -> dict:
    """The config dict of a `unirl train` command: the -f file's config keys, then --config's keys over
    them, then the explicit flags (--env, --framework, --backend, --seed, --address) over both."""
    config = dict(file_settings(args).get("config", {}))
    config.update(parse_json_flag("--config", args.config))
    for key in ("env", "framework", "backend", "seed"):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if getattr(args, "address", None):
        if config.get("backend", "local") in ("local", "multiprocessing", "mpi"):
            raise UnirlError(f"--address joins a Ray cluster, but the backend is `{config.get('backend', 'local')}`; "
                             "add --backend ray.")
        options = config.get("backend_options", {})
        if not isinstance(options, dict):
            raise UnirlError(f"config key `backend_options` must be a JSON object, got {options!r}.")
        config["backend_options"] = dict(options, address=args.address)
    return config


def check_run_dir(logdir: str) -> None:
    """Refuse a run directory that is a file, or inside a folder this user cannot write, before anything starts."""
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise UnirlError(f"--output `{logdir}` is a file, not a folder; give a folder for the run directory.")
    parent = os.path.abspath(logdir)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UnirlError(f"cannot make the run directory `{logdir}`: `{parent}` is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UnirlError(f"cannot make the run directory `{logdir}`: `{parent}` is not writable by this user.")


def _fmt(v, spec=".1f"):
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def iteration_line(r: dict) -> str:
    """The one line `unirl train` prints per iteration."""
    return (f"iter {r['iteration']:4d}  steps {r['timesteps_total']:7d}  "
            f"return {_fmt(r['episode_return_mean']):>5} [{_fmt(r['episode_return_min'], '.0f')}, "
            f"{_fmt(r['episode_return_max'], '.0f')}]  episodes {r['episodes_total']:5d}  "
            f"loss {_fmt(r.get('learner/total_loss'), '.3f')}  {r['env_steps_per_s']:,.0f} steps/s  "
            f"{r['time_total_s']:.1f} s")


#: Default time between periodic checkpoints when --checkpoint-freq is not given: at most this much work is lost.
CHECKPOINT_INTERVAL_S = 600.0


#: Set once a first Ctrl-C / SIGTERM was taken while training, so a second one that lands after the
#: training loop (while checkpointing or shutting workers down) is still reported as the second.
_STOP_REQUESTED = False


class StopRequest:
    """Ctrl-C / SIGTERM while training: the first finishes the iteration, checkpoints and exits 130/143;
    a second exits at once."""

    def __init__(self, say):
        self.signum = None
        self.say = say
        self.old = {}

    def __enter__(self):
        import signal

        for s in (signal.SIGINT, signal.SIGTERM):
            self.old[s] = signal.signal(s, self.handle)
        return self

    def handle(self, signum, frame):
        import signal

        global _STOP_REQUESTED
        if self.signum is not None:
            raise KeyboardInterrupt  # the second signal: leave now
        self.signum = signum
        _STOP_REQUESTED = True
        self.say(f"unirl: {signal.Signals(signum).name} received: finishing this iteration, then checkpointing "
                 "(press Ctrl-C again to exit at once)")

    def __exit__(self, *exc):
        import signal

        for s, h in self.old.items():
            signal.signal(s, h)
        return False


def _truncate_run_files(logdir: str, iteration: int) -> None:
    """Drop result.json / progress.csv rows after `iteration` (a resumed run redoes those iterations)."""
    import csv
    import io

    path = os.path.join(logdir, "result.json")
    if os.path.exists(path):
        kept = []
        with open(path) as f:
            for line in f:
                try:
                    if json.loads(line)["iteration"] <= iteration:
                        kept.append(line)
                except (ValueError, KeyError):
                    pass
        with open(path, "w") as f:
            f.writelines(kept)
    path = os.path.join(logdir, "progress.csv")
    if os.path.exists(path):
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
        if rows:
            header, body = rows[0], rows[1:]
            col = header.index("iteration") if "iteration" in header else None
            keep = [r for r in body if col is None or (len(r) > col and r[col].isdigit() and int(r[col]) <= iteration)]
            out = io.StringIO()
            w = csv.writer(out)
            w.writerow(header)
            w.writerows(keep)
            with open(path, "w", newline="") as f:
                f.write(out.getvalue())


def _worker_failure_line(e, logdir: str, last_checkpoint: str | None) -> str:
    where = (f"its last checkpoint is {last_checkpoint}; resume with `unirl train --resume {logdir}`"
             if last_checkpoint else "it has no checkpoint yet")
    return f"unirl: error: {str(e).splitlines()[0]}; the run stopped ({where})."



def _path_safe(name: str) -> str:
    """`name` as one folder name: an env id like ALE/Pong-v5 or pkg.mod:make_env keeps its letters, digits, dots and
    dashes, anything else becomes a dash (the run folder is one level under runs/)."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(name))

def cmd_train(args) -> int:
    """`unirl train`: build (or resume) a run, train until a stop criterion, checkpoint, evaluate.

    Returns:
        The exit code: 0, 1 (the run failed), 2 (a bad flag or config), 130 / 143 (Ctrl-C / SIGTERM).
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    import unirl
    from unirl.checkpoint import (check_trusted, checkpoint_name, list_checkpoints, load_latest,
                                  prune_checkpoints)
    from unirl.errors import NonFiniteWeightsError, WorkerDiedError, WorkerError
    from unirl.execution.recovery import TooManyWorkerFailures
    from unirl.results import RunLogger

    resume = getattr(args, "resume", None)
    replay = getattr(args, "replay_schedule", None)
    if resume and replay:
        raise UnirlError("--replay-schedule starts a new run and cannot be combined with --resume (a resumed "
                         "run keeps the arrival schedule its params.json names).")
    if resume and getattr(args, "file", None):
        raise UnirlError("-f starts a new run from a config file and cannot be combined with --resume (a resumed "
                         "run keeps the config its params.json holds).")
    if resume:
        params_file = os.path.join(resume, "params.json")
        try:
            with open(params_file) as f:
                params = json.load(f)
        except (OSError, ValueError) as e:
            raise UnirlError(f"cannot resume `{resume}`: {params_file} is missing or damaged ({e}).") from None
        run_name = params["run"]
        config = dict(params["config"])
        check_trusted({"algorithm": run_name, "config": config}, trust=args.trust_checkpoint)
        # The backend may change on resume (synchronous algorithms give the same bits on every backend).
        given = build_config(args)
        if given.get("backend", config.get("backend")) != config.get("backend") and "backend_options" not in given:
            config["backend_options"] = {}  # the old backend's options do not apply to the new one
        config.update({k: v for k, v in given.items() if k in ("backend", "backend_options")})
        stop = (check_stop(parse_json_flag("--stop", args.stop), args.forever) if args.stop
                else params.get("stop", {}))
    else:
        from unirl.registry import canonical_name

        from_file = file_settings(args)
        recorded = None
        if replay:
            from unirl.execution.schedule import recorded_run

            # A replay repeats the recorded run: its algorithm, config (on this command's backend) and length,
            # unless the flags say otherwise.
            recorded = recorded_run(replay)
        run_name = canonical_name(args.run or from_file.get("run") or (recorded or {}).get("algorithm") or "PPO")
        config = build_config(args)
        if recorded and recorded["algorithm"] == run_name:
            config = dict(recorded["config"], **config)
        default_stop = ({"training_iteration": recorded["iteration"]} if recorded and recorded["iteration"]
                        else {"timesteps_total": 100000})
        stop = check_stop(parse_json_flag("--stop", args.stop) if args.stop else
                          from_file.get("stop", default_stop), args.forever)
    algo_cls = unirl.get_algorithm_class(run_name)
    if replay:
        from unirl.execution.schedule import replay_config

        config = replay_config(algo_cls, config, replay, "--replay-schedule")
        if isinstance(stop.get("training_iteration"), int) and recorded["iteration"] is not None \
                and stop["training_iteration"] > recorded["iteration"]:
            raise UnirlError(f"--replay-schedule: the recorded run ends at iteration {recorded['iteration']}, "
                             f"--stop asks for {stop['training_iteration']}; a replay can repeat at most the "
                             "iterations its schedule recorded.")
    if args.evaluation_episodes and "evaluation_num_episodes" in getattr(algo_cls.config_class,
                                                                          "__dataclass_fields__", {}):
        # The run's config says how it was evaluated, so `unirl evaluate RUN_DIR` repeats that evaluation.
        config["evaluation_num_episodes"] = args.evaluation_episodes
    full_config = algo_cls.config_class.from_dict(config)
    from unirl.backends import get_backend_class

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = (resume or os.environ.get("UNIRL_RUN_DIR") or args.output
              or os.path.join("runs", f"{run_name}_{_path_safe(full_config.env)}_{full_config.framework}_"
                                      f"{full_config.backend}_seed{full_config.seed}_{stamp}"))
    if not resume:
        check_run_dir(logdir)
    # A backend may need to set up the processes first (MPI relaunches the command under mpiexec
    # and turns ranks > 0 into workers); it returns an exit code to end with, or None to go on
    # as the driver. It runs before anything is printed or written, so only the driver does that.
    prepare = getattr(get_backend_class(full_config.backend), "prepare_cli", None)
    if prepare is not None:
        os.environ.setdefault("UNIRL_RUN_DIR", logdir)
        code = prepare(full_config, sys.argv)
        if code is not None:
            if code not in (0, 2, 130, 143):
                done = list_checkpoints(logdir)
                print(f"unirl: the run ended with exit code {code}; "
                      + (f"its last checkpoint is {done[-1][1]}; resume with `unirl train --resume {logdir}`"
                         if done else "it has no checkpoint") + ".", file=sys.stderr)
            return code
    console = Console(stderr=False, quiet=args.quiet)
    err = Console(stderr=True)
    start_iteration = 0
    folder = None
    if resume:
        folder, _, ck_state = load_latest(logdir, say=lambda m: err.print(m, highlight=False, markup=False))
        start_iteration = int(ck_state["iteration"])
        _truncate_run_files(logdir, start_iteration)
    console.print(f"[bold]unirl train[/bold] {run_name} on {full_config.env} with {full_config.framework} "
                  f"on the {full_config.backend} backend, {full_config.num_workers} worker(s), "
                  + (f"{full_config.games_per_iteration} games per iteration" if hasattr(full_config, "games_per_iteration")
                     else f"{full_config.num_envs_per_worker} envs each")
                  + f", seed {full_config.seed}; results in {logdir}"
                  + (f"; resuming from {folder} (iteration {start_iteration})" if resume else ""))
    # A start that fails (bad env option, unreachable cluster, ...) leaves no run folder behind: the folder
    # is removed again if this command made it and no iteration was logged.
    made = not resume and not os.path.exists(logdir)
    logged = [0]

    def discard_if_empty():
        if made and not logged[0]:
            import shutil

            shutil.rmtree(logdir, ignore_errors=True)

    try:
        logger = RunLogger(logdir, {"run": run_name, "config": full_config.to_dict(), "stop": stop})
    except OSError as e:
        discard_if_empty()
        raise UnirlError(f"cannot write the run directory `{logdir}`: {e.strerror or e}.") from None
    if resume:
        _continue_csv(logger)
    try:
        algo = algo_cls(full_config)
    except BaseException:
        logger.close()
        discard_if_empty()
        raise
    if resume:
        try:
            algo.restore(folder, resume=True, trust_checkpoint=args.trust_checkpoint)
        except BaseException:
            algo.stop()
            logger.close()
            raise
    from unirl.kernels import settings

    with open(os.path.join(logdir, "kernels.json"), "w") as f:
        json.dump(settings(), f, indent=1, sort_keys=True)  # the kernel pins in effect (see docs/determinism.md)
    # The progress bar follows the first stop criterion (timesteps_total, training_iteration, time_total_s,
    # episodes_total, a return target, ...); with none (--forever) it counts iterations.
    primary = next(iter(stop), None)
    ckdir = os.path.join(logdir, "checkpoints")
    last_checkpoint = [folder]

    def checkpoint():
        path = algo.save(os.path.join(ckdir, checkpoint_name(algo.iteration)))
        last_checkpoint[0] = path
        prune_checkpoints(logdir, args.keep_checkpoints_num)
        return path

    import time

    last_save = time.monotonic()
    stopper = StopRequest(lambda m: err.print(m, highlight=False, markup=False))
    try:
        with stopper, Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                               TextColumn("{task.completed:,.0f}/{task.total:,.0f}" if primary else "{task.completed:,.0f}"), TimeElapsedColumn(),
                               TimeRemainingColumn(), console=console, transient=True,
                               disable=args.quiet) as progress:
            task = progress.add_task(primary or "iterations", total=stop.get(primary, None))
            done = bool(resume) and should_stop({"iteration": algo.iteration, "timesteps_total": algo.timesteps_total,
                                                 "episodes_total": algo.episodes_total,
                                                 "time_total_s": algo.time_total_s}, stop)
            while not done and stopper.signum is None:
                result = algo.train()
                logger.log(result)
                logged[0] += 1
                progress.console.print(iteration_line(result), soft_wrap=True, highlight=False)
                value = dict(result, training_iteration=result["iteration"]).get(primary or "iteration")
                if isinstance(value, (int, float)) and math.isfinite(value):
                    progress.update(task, completed=value)
                done = should_stop(result, stop)
                periodic = (result["iteration"] % args.checkpoint_freq == 0 if args.checkpoint_freq
                            else time.monotonic() - last_save >= CHECKPOINT_INTERVAL_S)
                if periodic and not done and stopper.signum is None:
                    checkpoint()
                    last_save = time.monotonic()
            path = checkpoint()
        if stopper.signum is not None:
            import signal

            name = signal.Signals(stopper.signum).name
            print(f"unirl: stopped by {name} after iteration {algo.iteration}; checkpoint {path}; "
                  f"resume with `unirl train --resume {logdir}`", file=sys.stderr, flush=True)
            return 128 + int(stopper.signum)
        console.print(f"checkpoint: {path}")
        if args.evaluation_episodes != 0:
            ev = algo.evaluate(args.evaluation_episodes)
            with open(os.path.join(logdir, "evaluation.json"), "w") as f:
                json.dump(ev, f, indent=1)
            console.print(f"evaluation: greedy mean return {ev['evaluation/episode_return_mean']:.1f} over "
                          f"{ev['evaluation/episodes']} episodes; weights digest {ev['weights_digest']}")
    except NonFiniteWeightsError as e:
        # The weights of this iteration are not saved: the last checkpoint (if any) holds finite ones.
        where = (f"its last checkpoint, with finite weights, is {last_checkpoint[0]}" if last_checkpoint[0]
                 else "it has no checkpoint")
        print(f"unirl: error: {e} The run stopped ({where}).", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("unirl: interrupted again; exiting at once without a checkpoint"
              + (f" (the last one is {last_checkpoint[0]})" if last_checkpoint[0] else ""), file=sys.stderr, flush=True)
        return 130
    except TooManyWorkerFailures as e:
        # The failing call was the iteration's sampling, before any learning: the state is whole.
        try:
            checkpoint()
        except Exception:
            pass
        print(f"unirl: error: {e}; checkpoint {last_checkpoint[0]}; resume with `unirl train --resume {logdir}`",
              file=sys.stderr, flush=True)
        return 1
    except (WorkerError, WorkerDiedError) as e:
        print(str(e), file=sys.stderr)
        print(_worker_failure_line(e, logdir, last_checkpoint[0]), file=sys.stderr, flush=True)
        return 1
    finally:
        algo.stop()
        logger.close()
        discard_if_empty()
    return 0


def _continue_csv(logger) -> None:
    """A resumed run appends to progress.csv under its existing header (not a second header)."""
    import csv

    path = os.path.join(logger.logdir, "progress.csv")
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    except OSError:
        header = None
    if header:
        logger._csv = csv.DictWriter(logger._csv_file, fieldnames=header, extrasaction="ignore")


def cmd_evaluate(args) -> int:
    """`unirl evaluate`: restore the checkpoint's algorithm (local backend, one worker) and run its own
    evaluate(), so the returns are those of `unirl.restore(checkpoint).evaluate(n)` (with --seed as the
    config seed; without --episodes, the run's evaluation_num_episodes, so a run folder evaluates to its
    own evaluation.json); returns the exit code."""
    import numpy as np

    from unirl.checkpoint import check_trusted, load_latest
    from unirl.registry import checkpoint_algorithm_class

    folder, _, state = load_latest(args.checkpoint, say=lambda m: print(m, file=sys.stderr))
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("algorithm"), str):
        raise UnirlError(f"checkpoint file `{os.path.join(folder, 'state.json')}` names no algorithm and config: "
                         "it is not a unirl algorithm checkpoint.")
    overrides = {"framework": args.framework} if args.framework else {}
    check_trusted(state, overrides, args.trust_checkpoint)
    algo_cls = checkpoint_algorithm_class(state)
    # Evaluation runs on the driver: one in-process worker is all the restored algorithm needs (a
    # recorded arrival schedule names workers that are not started here, and is not used).
    overrides.update(backend="local", backend_options={}, num_workers=1)
    if state["config"].get("arrival_schedule") is not None:
        overrides["arrival_schedule"] = None
    if args.seed is not None:
        overrides["seed"] = args.seed  # evaluate() seeds episode k's env from (config seed, k)
    algo = algo_cls.from_checkpoint(folder, trust_checkpoint=args.trust_checkpoint, **overrides)
    try:
        ev = algo.evaluate(args.episodes)
        env, framework = algo.config.env, algo.config.framework
    finally:
        algo.stop()
    returns = np.asarray(ev["evaluation/episode_returns"], np.float64)
    out = {"checkpoint": folder, "framework": framework, "episodes": ev["evaluation/episodes"],
           "episode_return_mean": ev["evaluation/episode_return_mean"], "episode_return_std": float(np.std(returns)),
           "episode_returns": returns.tolist()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    print(f"mean return {out['episode_return_mean']:.2f} (std {out['episode_return_std']:.2f}) over "
          f"{out['episodes']} greedy episodes of {env} with {framework}")
    return 0


class Parser(argparse.ArgumentParser):
    """argparse with unirl's error format: one line, `unirl: error: ...`, and exit code 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`).\n")


def count(least: int):
    """An argparse type: an integer of at least `least`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def make_parser() -> argparse.ArgumentParser:
    """The `unirl` argument parser with its subcommands (train, evaluate, bench, plot, tune, conformance)."""
    p = Parser(prog="unirl", description="Unified, scalable, reproducible reinforcement learning.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an algorithm; writes a run directory")
    t.add_argument("-f", "--file", metavar="FILE",
                   help="read the run from a YAML or JSON file: config keys, and optionally `run` and `stop`; keys "
                        "starting with _ are comments; flags given on the command line override the file")
    t.add_argument("--run", default=None, help="algorithm name (default: the -f file's `run`, else PPO)")
    t.add_argument("--env", help="Gymnasium env id (default: the config's, CartPole-v1)")
    t.add_argument("--framework", help="torch | tf | jax (default torch)")
    t.add_argument("--backend", help="local | multiprocessing | ray | mpi (default local)")
    t.add_argument("--config", default="{}", help="algorithm config as a JSON object")
    t.add_argument("--address", help="Ray: join the cluster at this address (backend_options.address), e.g. auto or HOST:6379")
    t.add_argument("--stop", default=None,
                   help=f"stop when any metric reaches its value, JSON; keys: {', '.join(STOP_KEYS)} "
                        "(default {\"timesteps_total\": 100000}; with --resume, the run's own); '{}' needs --forever")
    t.add_argument("--forever", action="store_true",
                   help="allow --stop='{}': train until Ctrl-C / SIGTERM (which checkpoint and exit)")
    t.add_argument("--seed", type=count(0), help="run seed, 0 or more (default 0)")
    t.add_argument("--output", help="run directory (default runs/<algo>_<env>_<framework>_<backend>_seed<s>_<time>)")
    t.add_argument("--checkpoint-freq", type=count(0), default=0,
                   help="checkpoint every N iterations (default 0: every 10 minutes); always at the end, "
                        "and on Ctrl-C / SIGTERM")
    t.add_argument("--keep-checkpoints-num", type=count(1), default=None,
                   help="keep only the newest N checkpoints (default: all)")
    t.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its latest whole checkpoint, exactly (same results "
                        "as if it had not stopped); appends to its result.json and progress.csv")
    t.add_argument("--replay-schedule", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="replay the arrival schedule recorded in this asynchronous run's latest checkpoint "
                        "(sets config key arrival_schedule): the same bits on any backend")
    t.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a resumed checkpoint to name code outside unirl's registries (import paths) and "
                        "to unpickle a worker state this user did not write")
    t.add_argument("--evaluation-episodes", type=count(0), default=None,
                   help="greedy episodes evaluated at the end (default: the config's evaluation_num_episodes; 0 skips)")
    t.add_argument("--quiet", action="store_true", help="no progress bar or per-iteration lines")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="mean greedy return of a checkpoint")
    e.add_argument("checkpoint", help="checkpoint folder, or a run folder (its latest checkpoint)")
    e.add_argument("--episodes", type=count(1), default=None,
                   help="episodes to run (default: the run's config evaluation_num_episodes, as its own evaluation)")
    e.add_argument("--framework", help="load the weights into this framework (default: the one that trained)")
    e.add_argument("--seed", type=count(0), help="evaluation seed (default: the run's)")
    e.add_argument("--json", help="also write the returns to this JSON file")
    e.add_argument("--trust-checkpoint", action="store_true",
                   help="allow a checkpoint that names code outside unirl's registries (import paths)")
    e.set_defaults(func=cmd_evaluate)

    from unirl import benchmarks

    b = sub.add_parser("bench", help="measure frameworks and backends (ratios to torch / local)")
    benchmarks.add_arguments(b)
    b.set_defaults(func=benchmarks.run)

    from unirl import plot as plot_cli

    pl = sub.add_parser("plot", help="learning curves of run directories to a PNG (mean and min-max band over seeds)")
    plot_cli.add_arguments(pl)
    pl.set_defaults(func=plot_cli.run)

    from unirl import tune as tune_cli

    tu = sub.add_parser("tune", help="hyperparameter search on Ray Tune: random/grid, Optuna, PBT, ASHA (unirl[tune])")
    tune_cli.add_arguments(tu)
    tu.set_defaults(func=tune_cli.run)

    from unirl.conformance import cli as conformance_cli

    c = sub.add_parser("conformance", help="prove reproducibility across frameworks, backends and worker counts")
    conformance_cli.add_arguments(c)
    c.set_defaults(func=lambda args: conformance_cli.run(check_conformance_names(args)))
    return p


def check_conformance_names(args):
    """`unirl conformance`: a framework or backend that is neither registered nor an import path is an error
    (a registered one whose extra is missing is reported unavailable, as before)."""
    from unirl.backends import BACKENDS
    from unirl.frameworks import FRAMEWORKS

    for flag, registry in (("framework", FRAMEWORKS), ("backend", BACKENDS)):
        for name in (x.strip() for x in (getattr(args, flag, None) or "").split(",")):
            if name and ":" not in name and name not in registry:
                raise UnirlError(f"unknown {flag} `{name}` in --{flag}; unirl has {', '.join(registry)}."
                                 + did_you_mean(name, registry) + " (Your own: an import path pkg.module:Class.)")
    return args


def main(argv=None) -> int:
    """The `unirl` command: parse `argv` (default: sys.argv), run the subcommand, return its exit code.

    A `UnirlError` is printed as one `unirl: error:` line (exit code 2), a worker's failure as its traceback
    and one line (exit code 1); never a traceback of unirl's own code.
    """
    global _STOP_REQUESTED
    _STOP_REQUESTED = False
    args = make_parser().parse_args(argv)
    try:
        return args.func(args)
    except UnirlError as e:
        print(f"unirl: error: {e}", file=sys.stderr)
        return 2
    except (WorkerError, WorkerDiedError) as e:
        # The worker's traceback (in the message) and one unirl line; not the driver's internals.
        print(str(e), file=sys.stderr)
        print(f"unirl: error: {str(e).splitlines()[0]}.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Ctrl-C outside the training loop (while starting, or a second one while shutting down): no traceback.
        again = " again" if _STOP_REQUESTED else ""
        print(f"unirl: interrupted{again}; exiting at once", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
