"""Hyperparameter search on Ray Tune: any unirl algorithm as a Tune trainable.

`trainable("PPO")` is a `ray.tune.Trainable` class whose config is the algorithm's config (plus,
optionally, `"run"` naming the algorithm). Each Tune iteration is one `algorithm.train()`; Tune's
checkpoints are unirl checkpoints (`<tune checkpoint>/unirl/weights.npz + state.json +
worker_state.pkl`, and `trial.json` naming the trial that wrote it), so population-based training
(PBT) can carry one trial's weights, optimizer state and counters into another and go on with a
perturbed config. Every result carries `restored_from` (the id of the last trial whose checkpoint
this trial's state came from, kept through its own later checkpoints; "" if none) and `lr` (the
learning rate in effect).

    import unirl.tune
    from ray import tune
    tuner = tune.Tuner(unirl.tune.trainable("PPO"),
                       param_space={"env": "CartPole-v1", "lr": tune.loguniform(1e-4, 1e-2)}, ...)

or `unirl.tune.run_tune(...)` / `unirl tune ...`, which add the PBT, ASHA and Optuna set-ups, a
check of the config before Ray starts, and a summary table. Ray is imported here only when used
(`import unirl` never imports it).
"""
from __future__ import annotations

import json
import math
import os
import re

from unirl.errors import UnirlError, missing_extra

SCHEDULERS = ("fifo", "pbt", "asha")
SEARCHES = ("random", "optuna")
#: Search-space forms accepted in JSON (`unirl tune --space`): {"key": {"loguniform": [lo, hi]}}, ...
SPACE_FORMS = ("loguniform", "uniform", "quniform", "randint", "choice", "grid_search")


def _tune():
    try:
        from ray import tune
    except ImportError:
        raise missing_extra("ray[tune]", "tune", "Ray Tune search") from None
    return tune


_CLASSES: dict = {}


def _base_class():
    if "base" in _CLASSES:
        return _CLASSES["base"]
    tune = _tune()

    class UnirlTrainable(tune.Trainable):
        """A unirl algorithm as a Tune trainable (see the module docstring)."""

        algorithm = "PPO"

        def setup(self, config):
            import unirl

            config = dict(config)
            run = config.pop("run", self.algorithm)
            callbacks = config.pop("callbacks", None)
            self.restored_from = ""
            self.algo = unirl.build(run, config, callbacks=callbacks)

        def step(self):
            result = self.algo.train()
            out = {k: v for k, v in result.items() if not isinstance(v, (list, tuple, dict))}
            out.update(restored_from=self.restored_from, lr=float(self.algo.current_lr()))
            return out

        def save_checkpoint(self, checkpoint_dir):
            self.algo.save(os.path.join(checkpoint_dir, "unirl"))
            with open(os.path.join(checkpoint_dir, "trial.json"), "w") as f:
                json.dump({"trial_id": self.trial_id, "iteration": self.algo.iteration,
                           "timesteps_total": self.algo.timesteps_total, "restored_from": self.restored_from}, f)
            return None

        def load_checkpoint(self, checkpoint):
            folder = checkpoint if isinstance(checkpoint, str) else checkpoint.get("path")
            try:
                with open(os.path.join(folder, "trial.json")) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                meta = {}
            self.algo.recent_returns.clear()
            self.algo.recent_lengths.clear()
            try:  # exact continuation: the workers' envs too (a checkpoint this user wrote)
                self.algo.restore(os.path.join(folder, "unirl"), resume=True)
            except UnirlError:
                self.algo.restore(os.path.join(folder, "unirl"), resume=False)
            source = meta.get("trial_id", "")
            if source and source != self.trial_id:
                self.restored_from = source
            else:  # its own checkpoint (a paused trial going on): keep what it had
                self.restored_from = meta.get("restored_from", "")

        def reset_config(self, new_config):
            # A reused actor (PBT's exploit, reuse_actors): a new algorithm for the new config; Tune
            # then loads the checkpoint it is to continue from.
            self.cleanup()
            self.algo = None
            self.setup(new_config)
            return True

        def cleanup(self):
            algo = getattr(self, "algo", None)
            if algo is not None:
                algo.stop()

    _CLASSES["base"] = UnirlTrainable
    return UnirlTrainable


def trainable(algorithm: str = "PPO"):
    """The Tune trainable class for `algorithm` (a registered name or an import path)."""
    key = ("algo", algorithm)
    if key not in _CLASSES:
        base = _base_class()
        _CLASSES[key] = type(f"unirl_{algorithm.replace(':', '_').replace('.', '_')}", (base,),
                             {"algorithm": algorithm, "__module__": __name__})
    return _CLASSES[key]


def __getattr__(name):
    if name == "UnirlTrainable":
        return _base_class()
    raise AttributeError(name)


# -- search spaces -------------------------------------------------------------------------------
def space_from_json(space: dict) -> dict:
    """Tune search-space objects from plain JSON: {"lr": {"loguniform": [1e-4, 1e-2]}, "num_epochs":
    {"choice": [4, 8]}, "seed": {"grid_search": [0, 1]}, "gamma": 0.99}."""
    tune = _tune()
    out = {}
    for key, value in space.items():
        if isinstance(value, dict) and len(value) == 1 and next(iter(value)) in SPACE_FORMS:
            form, args = next(iter(value.items()))
            if form in ("choice", "grid_search"):
                if not isinstance(args, list) or not args:
                    raise UnirlError(f"search space `{key}`: {form} takes a non-empty list, got {args!r}.")
                out[key] = tune.choice(args) if form == "choice" else tune.grid_search(args)
                continue
            if (not isinstance(args, list) or len(args) != (3 if form == "quniform" else 2)
                    or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)):
                raise UnirlError(f"search space `{key}`: {form} takes [low, high"
                                 + (", q" if form == "quniform" else "") + f"], got {args!r}.")
            if args[0] >= args[1] or (form == "loguniform" and args[0] <= 0):
                raise UnirlError(f"search space `{key}`: {form} needs low < high" +
                                 (" and low > 0" if form == "loguniform" else "") + f", got {args!r}.")
            out[key] = getattr(tune, form)(*args)
        elif isinstance(value, dict) and len(value) == 1 and key != "env_config" and key != "model" \
                and key != "backend_options":
            form = next(iter(value))
            raise UnirlError(f"search space `{key}`: unknown form `{form}`; use one of {', '.join(SPACE_FORMS)}.")
        else:
            out[key] = value
    return out


def _is_domain(v) -> bool:
    from ray.tune.search.sample import Domain

    return isinstance(v, Domain)


def _is_grid(v) -> bool:
    return isinstance(v, dict) and set(v) == {"grid_search"}


def check_config(run: str, param_space: dict) -> None:
    """Build the algorithm's config from one sample of the space: a bad key or value is a one-sentence
    error here, on the driver, before Ray starts."""
    import random

    from unirl.registry import get_algorithm_class

    algo_cls = get_algorithm_class(run)
    rng = random.Random(0)
    sample = {}
    for k, v in param_space.items():
        if k in ("run", "callbacks"):
            continue
        if _is_grid(v):
            v = v["grid_search"][0]
        elif _is_domain(v):
            v = v.sample(random_state=rng.randint(0, 2**31 - 1))
            v = v.item() if hasattr(v, "item") else v
        sample[k] = v
    algo_cls.config_class.from_dict(sample)


# -- running a search ----------------------------------------------------------------------------
def run_tune(run: str = "PPO", param_space: dict | None = None, *, scheduler: str = "fifo", search: str = "random",
             num_samples: int = 4, stop: dict | None = None, metric: str = "episode_return_mean", mode: str = "max",
             perturbation_interval: int = 4, cpus_per_trial: float = 1.0, num_cpus: int | None = None,
             address: str | None = None, output: str | None = None, name: str | None = None, seed: int = 0,
             checkpoint_freq: int | None = None, keep_checkpoints_num: int | None = None, verbose: int = 0):
    """Run a Tune search over `param_space` (a unirl config whose values may be Tune search spaces)
    and return (summary rows, Tune's ResultGrid). scheduler "pbt" perturbs the space's searchable
    keys every `perturbation_interval` iterations (exploit: copy a top-quantile trial's checkpoint;
    explore: multiply by 0.8 / 1.2 or resample); search "optuna" proposes configs with Optuna's TPE."""
    import random
    import time

    if scheduler not in SCHEDULERS:
        raise UnirlError(f"unknown scheduler `{scheduler}`; use one of {', '.join(SCHEDULERS)}.")
    if search not in SEARCHES:
        raise UnirlError(f"unknown search `{search}`; use one of {', '.join(SEARCHES)}.")
    if num_samples < 1:
        raise UnirlError(f"num_samples must be at least 1, got {num_samples}.")
    if mode not in ("max", "min"):
        raise UnirlError(f"mode must be max or min, got {mode!r}.")
    if perturbation_interval < 1:
        raise UnirlError(f"perturbation_interval must be at least 1, got {perturbation_interval}.")
    if not cpus_per_trial > 0:
        raise UnirlError(f"cpus_per_trial must be positive, got {cpus_per_trial}.")
    tune = _tune()
    param_space = dict(param_space or {})
    check_config(run, param_space)
    searchable = {k: v for k, v in param_space.items() if _is_domain(v)}
    if scheduler == "pbt" and not searchable:
        raise UnirlError("PBT needs at least one searchable key in the space to perturb, e.g. "
                         "{\"lr\": {\"loguniform\": [1e-4, 1e-2]}}.")
    if search == "optuna":
        if any(_is_grid(v) for v in param_space.values()):
            raise UnirlError("Optuna search takes no grid_search; use choice instead.")
        try:
            import optuna  # noqa: F401
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise missing_extra("optuna", "tune", "Optuna search") from None
        searcher = OptunaSearch(seed=seed)
    else:
        from ray.tune.search.basic_variant import BasicVariantGenerator

        searcher = BasicVariantGenerator(random_state=seed)  # the same initial configs for the same seed
    random.seed(seed)  # PBT's perturbations draw from Python's random module
    if scheduler == "pbt":
        from ray.tune.schedulers import PopulationBasedTraining

        # synch: every trial reaches the perturbation point before any is compared, so a trial is
        # never judged on a stale result nor cloned from a checkpoint behind its own.
        sched = PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=perturbation_interval,
                                        hyperparam_mutations=searchable, synch=True)
    elif scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        sched = ASHAScheduler(time_attr="training_iteration", grace_period=perturbation_interval)
    else:
        sched = None
    import ray

    from unirl.registry import get_algorithm_class

    stamp = time.strftime("%Y%m%d-%H%M%S")
    env = str(param_space.get("env", get_algorithm_class(run).config_class.env))
    how = scheduler if scheduler != "fifo" else search
    name = name or f"tune_{run.replace(':', '_')}_{env.replace('/', '_').replace(':', '_')}_{how}_{stamp}"
    storage = os.path.abspath(output or "runs")
    os.makedirs(storage, exist_ok=True)
    owns_ray = not ray.is_initialized()
    if owns_ray:
        try:
            if address:
                ray.init(address=address, logging_level="WARNING", log_to_driver=verbose > 0)
            else:
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                         logging_level="WARNING", log_to_driver=verbose > 0)
        except ConnectionError as e:
            raise UnirlError(f"cannot join the Ray cluster at `{address}`: {e}.") from None
    try:
        from ray.tune import CheckpointConfig, RunConfig, TuneConfig

        freq = checkpoint_freq if checkpoint_freq is not None else (perturbation_interval if scheduler == "pbt" else 0)
        tuner = tune.Tuner(
            tune.with_resources(trainable(run), {"cpu": cpus_per_trial}),
            param_space=param_space,
            tune_config=TuneConfig(num_samples=num_samples, scheduler=sched, search_alg=searcher,
                                   reuse_actors=True, metric=metric, mode=mode),
            run_config=RunConfig(name=name, storage_path=storage, stop=stop or {"timesteps_total": 100000},
                                 verbose=verbose,
                                 checkpoint_config=CheckpointConfig(checkpoint_frequency=freq, checkpoint_at_end=True,
                                                                    num_to_keep=keep_checkpoints_num)),
        )
        grid = tuner.fit()
    finally:
        if owns_ray:
            ray.shutdown()
    experiment = os.path.join(storage, name)
    rows = summarize(grid, list(searchable) + [k for k, v in param_space.items() if _is_grid(v)], metric, experiment,
                     pbt=scheduler == "pbt")
    return rows, grid, experiment


def summarize(grid, keys: list[str], metric: str, experiment_dir: str | None = None, pbt: bool = False) -> list[dict]:
    """One row per trial: id, the searched values it ended with, its last result, and (PBT) how often
    it exploited another trial (took its checkpoint and a perturbed copy of its config)."""
    targets = [e["trial"] for e in exploitations(experiment_dir)] if experiment_dir else []
    rows = []
    for res in grid:
        last = res.metrics or {}
        config = res.config or {}
        trial = last.get("trial_id") or os.path.basename(str(getattr(res, "path", "")))
        row = {"trial": trial, "status": "ERROR" if res.error else "TERMINATED"}
        started = re.search(r"_\d+_(.+)_\d{4}-\d\d-\d\d_", os.path.basename(str(getattr(res, "path", ""))))
        if started and keys:
            row["started as"] = started.group(1).split("_", 1)[-1]
        for k in keys:
            row[k if not pbt else f"{k} now"] = config.get(k)
        for k in ("training_iteration", "timesteps_total", metric):
            row[k] = last.get(k)
        if pbt:
            index = trial.rsplit("_", 1)[-1].lstrip("0") or "0"
            row["exploits"] = sum(1 for t in targets if str(t).split("_", 1)[0] == index)
            row["last restored from"] = last.get("restored_from") or ""
        if res.error:
            row["error"] = str(res.error).strip().splitlines()[-1][:200]
        rows.append(row)
    return rows


def format_table(rows: list[dict], metric: str) -> str:
    """The summary as a Markdown table (what the README shows)."""
    if not rows:
        return "(no trials)"
    cols = [c for c in rows[0] if c != "error"]

    def fmt(v):
        if isinstance(v, float):
            return "nan" if math.isnan(v) else (f"{v:.3g}" if abs(v) < 1e-2 or abs(v) >= 1e4 else f"{v:.4g}")
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in sorted(rows, key=lambda r: -(r.get(metric) or -math.inf) if isinstance(r.get(metric), (int, float))
                    and not math.isnan(r.get(metric)) else math.inf):
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(lines)


def exploitations(experiment_dir: str) -> list[dict]:
    """PBT's exploit records in the experiment folder (pbt_global.txt): which trial took whose checkpoint."""
    path = os.path.join(experiment_dir, "pbt_global.txt")
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                # [target trial tag, clone trial tag, target iteration, clone iteration, old config, new config]
                if isinstance(rec, list) and len(rec) >= 6:
                    out.append({"trial": rec[0], "cloned": rec[1], "at_iteration": rec[2],
                                "clone_config": rec[4], "new_config": rec[5]})
    return out


# -- the command line ----------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("--run", default="PPO", help="algorithm name (default PPO)")
    p.add_argument("--env", help="Gymnasium env id (default: the config's, CartPole-v1)")
    p.add_argument("--framework", help="torch | tf | jax (default torch)")
    p.add_argument("--backend", help="each trial's backend: local | multiprocessing (default local)")
    p.add_argument("--config", default="{}", help="the fixed part of the algorithm config, a JSON object")
    p.add_argument("--space", default="{}",
                   help="the searched part, JSON: {\"lr\": {\"loguniform\": [1e-4, 1e-2]}, \"num_epochs\": "
                        "{\"choice\": [4, 8]}}; forms: " + ", ".join(SPACE_FORMS))
    p.add_argument("--scheduler", default="fifo", choices=SCHEDULERS,
                   help="fifo (run every trial to the end), pbt (population-based training: exploit and explore "
                        "the searched keys every --perturbation-interval iterations), asha (early stopping)")
    p.add_argument("--search", default="random", choices=SEARCHES,
                   help="random (Tune's sampler; grid_search expands) or optuna (TPE)")
    p.add_argument("--num-samples", type=int, default=4, help="trials (with grid_search: samples per grid point)")
    p.add_argument("--stop", default='{"timesteps_total": 100000}',
                   help="per trial, JSON; stop when any result key reaches its value (default "
                        "{\"timesteps_total\": 100000})")
    p.add_argument("--metric", default="episode_return_mean", help="result key to optimise (default episode_return_mean)")
    p.add_argument("--mode", default="max", choices=["max", "min"])
    p.add_argument("--perturbation-interval", type=int, default=4,
                   help="PBT: iterations between perturbations (and checkpoints); ASHA: grace period")
    p.add_argument("--cpus-per-trial", type=float, default=1.0,
                   help="CPUs Ray reserves per trial (0.5: two trials per core); default 1")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the private Ray instance (default: all)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a private one")
    p.add_argument("--search-seed", type=int, default=0,
                   help="seed of the searcher and of PBT's perturbations (default 0); the trials' own seed is "
                        "the config's `seed` (searchable too)")
    p.add_argument("--output", help="folder for the experiment (default runs/); each trial's folder holds "
                                    "result.json, progress.csv, params.json, TensorBoard events and checkpoints")
    p.add_argument("--name", help="experiment name (default tune_<algo>_<env>_<scheduler>_<time>)")
    p.add_argument("--json", help="also write the summary rows to this JSON file")
    p.add_argument("--verbose", type=int, default=0, help="Tune's own progress output: 0 (default), 1, 2")


def parse_json_flag(flag: str, text: str) -> dict:
    """A JSON object from a flag, or a one-line error pointing at the position (as `unirl train` does)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UnirlError(f"{flag} is not valid JSON: {e.msg} at position {e.pos}: {text}") from None
    if not isinstance(value, dict):
        raise UnirlError(f"{flag} must be a JSON object like '{{\"key\": value}}', got {text}.")
    return value


def run(args) -> int:
    config = parse_json_flag("--config", args.config)
    for key in ("env", "framework", "backend"):
        if getattr(args, key, None) is not None:
            config[key] = getattr(args, key)
    space = space_from_json(parse_json_flag("--space", args.space))
    overlap = sorted(set(config) & set(space))
    if overlap:
        raise UnirlError(f"--config and --space both set {', '.join(overlap)}; give each key in one of them.")
    stop = parse_json_flag("--stop", args.stop)
    if not stop:
        raise UnirlError("--stop is empty, so trials would never end; give e.g. '{\"timesteps_total\": 100000}'.")
    for k, v in stop.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UnirlError(f"stop criterion `{k}` must be a number, got {v!r}.")
    if args.json:
        from unirl.plot import check_output

        check_output(args.json)
    rows, _, experiment = run_tune(
        args.run, {**config, **space}, scheduler=args.scheduler, search=args.search, num_samples=args.num_samples,
        stop=stop, metric=args.metric, mode=args.mode, perturbation_interval=args.perturbation_interval,
        cpus_per_trial=args.cpus_per_trial, num_cpus=args.num_cpus, address=args.address, output=args.output,
        name=args.name, seed=args.search_seed, verbose=args.verbose)
    print(format_table(rows, args.metric))
    exploits = exploitations(experiment)
    if args.scheduler == "pbt":
        print(f"PBT: {len(exploits)} exploitations (a trial took a better trial's checkpoint and a perturbed copy "
              f"of its config); log: {os.path.join(experiment, 'pbt_global.txt')}")
    for r in rows:
        if r.get("error"):
            print(f"trial {r['trial']} failed: {r['error']}")
    print(f"results: {experiment}  (unirl plot {experiment}; tensorboard --logdir {experiment})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"experiment": experiment, "scheduler": args.scheduler, "search": args.search, "trials": rows,
                       "exploitations": exploits}, f, indent=1, default=str)
    return 1 if any(r.get("error") for r in rows) else 0
