"""Log every iteration to an experiment tracker with a callback (MLflow's API; W&B is the same shape).

    python examples/callbacks_logging.py                 # uses mlflow if installed, else a CSV stand-in
    python examples/callbacks_logging.py --steps 50000

`unirl.Callbacks` hooks run on the driver: `on_episode_end` for every finished episode (in global
env order, whatever the backend), `on_train_result` once per iteration (keys it adds to the result
are returned and logged in the run directory), `on_checkpoint` after each save. Neither MLflow nor
W&B is a dependency of unirl: the tracker is your code.
"""
from __future__ import annotations

import argparse
import csv
import os
import tempfile

import unirl


class CSVTracker:
    """A stand-in with MLflow's three calls, writing metrics.csv; used when mlflow is not installed."""

    def __init__(self, folder: str):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)
        self.rows = []

    def start_run(self):
        return self

    def log_metrics(self, metrics: dict, step: int):
        self.rows.append(dict(metrics, step=step))
        with open(os.path.join(self.folder, "metrics.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted({k for r in self.rows for k in r}))
            writer.writeheader()
            writer.writerows(self.rows)

    def log_artifacts(self, path: str, artifact_path: str | None = None):
        with open(os.path.join(self.folder, "artifacts.txt"), "a") as f:
            f.write(f"{artifact_path}: {path}\n")


class TrackerLogging(unirl.Callbacks):
    """Scalars of each result to the tracker; checkpoints as artifacts; the longest episode so far."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.longest = 0
        tracker.start_run()

    def on_episode_end(self, algorithm, episode_return, episode_length):
        self.longest = max(self.longest, episode_length)

    def on_train_result(self, algorithm, result):
        result["longest_episode"] = self.longest  # added keys are logged with the result
        scalars = {k.replace("/", "."): v for k, v in result.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.tracker.log_metrics(scalars, step=result["timesteps_total"])

    def on_checkpoint(self, algorithm, path):
        self.tracker.log_artifacts(path, artifact_path=os.path.basename(path))


def main(argv=None) -> TrackerLogging:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20_000)
    p.add_argument("--out", default=None, help="folder for the CSV stand-in and the checkpoint")
    args = p.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="unirl-callbacks-")
    try:
        import mlflow as tracker
    except ImportError:
        tracker = CSVTracker(out)
    logging = TrackerLogging(tracker)
    with unirl.build("PPO", {"env": "CartPole-v1"}, callbacks=logging) as algo:
        while (result := algo.train())["timesteps_total"] < args.steps:
            pass
        algo.save(os.path.join(out, "checkpoint"))
    print(f"{result['timesteps_total']} env steps, return {result['episode_return_mean']:.1f}, "
          f"longest episode {result['longest_episode']}; logged to {out}")
    return logging


if __name__ == "__main__":
    main()
