"""`unirl plot RUN_DIR [RUN_DIR ...]`: learning curves from run directories to a PNG (matplotlib, Agg).

Runs whose params.json agree on everything but the seed form one curve: the mean over those runs
with a min-max band, on a common grid of the x axis (env steps or wall-clock seconds) over the
range every run of the group covers, each run's points linearly interpolated onto it.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from unirl.errors import UnirlError, missing_extra

#: x-axis choices: result key and axis label.
X_AXES = {"timesteps": ("timesteps_total", "env steps"), "time": ("time_total_s", "wall-clock time (s)")}
GRID_POINTS = 200


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or the error naming the `plot` extra."""
    try:
        import matplotlib
    except ImportError:
        raise missing_extra("matplotlib", "plot", "plotting") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def check_output(path: str) -> None:
    """A one-sentence error now if a PNG cannot be written at `path` (before any work is done)."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UnirlError(f"cannot write `{path}`: it is a folder; give a file name such as curves.png.")
    if not os.path.isdir(folder):
        raise UnirlError(f"cannot write `{path}`: the folder {folder} does not exist.")
    if not os.access(folder, os.W_OK):
        raise UnirlError(f"cannot write `{path}`: the folder {folder} is not writable.")


def find_runs(paths: list[str]) -> list[str]:
    """Run directories (those with a result.json) among `paths`, or below them (e.g. `runs/`), sorted."""
    runs = []
    for path in paths:
        if not os.path.isdir(path):
            raise UnirlError(f"`{path}` is not a directory; give run directories (each with a result.json).")
        if os.path.isfile(os.path.join(path, "result.json")):
            runs.append(path)
            continue
        below = sorted(os.path.dirname(os.path.join(root, "result.json")) for root, _, files in os.walk(path)
                       if "result.json" in files)
        if not below:
            raise UnirlError(f"`{path}` holds no run: no result.json in it or below it.")
        runs.extend(below)
    return list(dict.fromkeys(runs))


def load_run(run_dir: str, metric: str = "episode_return_mean") -> dict:
    """A run's params and its per-iteration columns (timesteps_total, time_total_s, the metric)."""
    rows = []
    with open(os.path.join(run_dir, "result.json")) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass  # a line cut short by a crash
    if not rows:
        raise UnirlError(f"run `{run_dir}` has no results yet (its result.json is empty).")
    if metric not in rows[-1]:
        raise UnirlError(f"run `{run_dir}` has no result key `{metric}`; "
                         f"numeric keys: {', '.join(k for k, v in rows[-1].items() if isinstance(v, (int, float)))}.")
    try:
        with open(os.path.join(run_dir, "params.json")) as f:
            params = json.load(f)
    except (OSError, ValueError):
        params = {}

    def column(key):
        return np.array([float(r[key]) if isinstance(r.get(key), (int, float)) else math.nan for r in rows])

    return {"dir": run_dir, "params": params, "timesteps_total": column("timesteps_total"),
            "time_total_s": column("time_total_s"), metric: column(metric)}


def _config(params: dict) -> dict:
    """The run's config: params["config"] of a unirl run directory; a Ray Tune trial's params.json is the config."""
    if isinstance(params.get("config"), dict):
        return params["config"]
    return {k: v for k, v in params.items() if k not in ("run", "stop")}


def _group_key(params: dict) -> str:
    config = dict(_config(params))
    config.pop("seed", None)
    return json.dumps({"run": params.get("run"), "config": config}, sort_keys=True, default=str)


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else json.dumps(v, default=str)


def _label(params: dict, differing: list[str]) -> str:
    config = _config(params)
    parts = [str(params.get("run", "")), str(config.get("env", ""))]
    parts += [f"{k}={_short(config.get(k))}" for k in differing]
    return " ".join(p for p in parts if p)


def group_runs(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """Runs grouped by their config without the seed: [(label, runs)], in first-seen order."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(_group_key(r["params"]), []).append(r)
    configs = [_config(g[0]["params"]) for g in groups.values()]
    keys = sorted({k for c in configs for k in c} - {"seed"})
    differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    out = []
    for g in groups.values():
        seeds = sorted({_config(r["params"]).get("seed") for r in g} - {None})
        label = _label(g[0]["params"], differing)
        label += f" ({len(g)} run{'s' if len(g) > 1 else ''}" + (f", seeds {', '.join(map(str, seeds))})" if seeds else ")")
        out.append((label, g))
    return out


def band(runs: list[dict], x_key: str, metric: str, points: int = GRID_POINTS):
    """(grid, mean, min, max) of the metric over the runs on a common x grid (the range all runs cover)."""
    curves = []
    for r in runs:
        x, y = r[x_key], r[metric]
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() >= 1:
            curves.append((x[ok], y[ok]))
    if not curves:
        return None
    lo = max(c[0][0] for c in curves)
    hi = min(c[0][-1] for c in curves)
    if hi <= lo:
        grid = np.array([hi])
    else:
        grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(axis=0), ys.min(axis=0), ys.max(axis=0)


def plot_runs(run_dirs: list[str], output: str, x: str = "both", metric: str = "episode_return_mean",
              title: str | None = None) -> dict:
    """Draw the learning curves of `run_dirs` to `output` (PNG; ".png" is added to a name without
    an extension); returns what was drawn, per group."""
    if x not in (*X_AXES, "both"):
        raise UnirlError(f"--x must be timesteps, time or both, got {x!r}.")
    check_output(output)
    if not os.path.splitext(output)[1]:
        output += ".png"
    runs = [load_run(d, metric) for d in find_runs(run_dirs)]
    groups = group_runs(runs)
    axes_names = list(X_AXES) if x == "both" else [x]
    plt = pyplot()
    fig, axes = plt.subplots(1, len(axes_names), figsize=(6.4 * len(axes_names), 4.4), squeeze=False)
    drawn = {}
    for ax, name in zip(axes[0], axes_names):
        x_key, x_label = X_AXES[name]
        for i, (label, members) in enumerate(groups):
            b = band(members, x_key, metric)
            if b is None:
                continue
            grid, mean, lo, hi = b
            color = f"C{i % 10}"
            ax.plot(grid, mean, color=color, label=label, linewidth=1.6)
            if len(members) > 1:
                ax.fill_between(grid, lo, hi, color=color, alpha=0.22, linewidth=0)
            drawn.setdefault(label, {})[name] = {"x_max": float(grid[-1]), "mean_final": float(mean[-1]),
                                                 "runs": len(members)}
        ax.set_xlabel(x_label)
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.set_title(f"{metric.replace('_', ' ')} vs {x_label}", fontsize=10)
    axes[0][0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title or "mean over runs, band: min to max", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(output, dpi=110)
    except OSError as e:
        raise UnirlError(f"cannot write `{output}`: {e.strerror or e}.") from None
    finally:
        plt.close(fig)
    return drawn


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR",
                   help="run directories (or folders holding them, e.g. runs/); runs differing only in seed "
                        "are drawn as one curve, their mean with a min-max band")
    p.add_argument("--output", "-o", default="learning_curves.png", help="PNG to write (default learning_curves.png)")
    p.add_argument("--x", default="both", choices=["timesteps", "time", "both"],
                   help="x axis: env steps, wall-clock seconds, or both side by side (default both)")
    p.add_argument("--metric", default="episode_return_mean", help="result key on the y axis (default episode_return_mean)")
    p.add_argument("--title", default=None, help="figure title")


def run(args) -> int:
    drawn = plot_runs(args.runs, args.output, x=args.x, metric=args.metric, title=args.title)
    for label, axes in drawn.items():
        first = next(iter(axes.values()))
        print(f"{label}: final mean {args.metric} {first['mean_final']:.1f}")
    print(f"wrote {args.output if os.path.splitext(args.output)[1] else args.output + '.png'}")
    return 0
