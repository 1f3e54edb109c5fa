"""The run directory: params.json, result.json (one JSON line per iteration), progress.csv, checkpoints/."""
from __future__ import annotations

import csv
import json
import os

import numpy as np


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


class RunLogger:
    def __init__(self, logdir: str, params: dict):
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        with open(os.path.join(logdir, "params.json"), "w") as f:
            json.dump(params, f, indent=1, sort_keys=True)
        self._json = open(os.path.join(logdir, "result.json"), "a")
        self._csv_file = open(os.path.join(logdir, "progress.csv"), "a", newline="")
        self._csv = None

    def log(self, result: dict) -> None:
        row = {k: _jsonable(v) for k, v in result.items()}
        self._json.write(json.dumps(row, sort_keys=True) + "\n")
        self._json.flush()
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float, str, bool)) or v is None}
        if self._csv is None:
            self._csv = csv.DictWriter(self._csv_file, fieldnames=sorted(scalars), extrasaction="ignore")
            self._csv.writeheader()
        self._csv.writerow(scalars)
        self._csv_file.flush()

    def close(self) -> None:
        self._json.close()
        self._csv_file.close()
