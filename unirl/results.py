"""The run directory: params.json, result.json (one JSON line per iteration), progress.csv,
TensorBoard event files (events.out.tfevents.*), checkpoints/."""
from __future__ import annotations

import csv
import glob
import json
import os
import sys

import numpy as np


def _jsonable(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return v


def resolve_params(params: dict) -> dict:
    """params with the config's `model` written out in full (every ModelConfig field, defaults
    included), so params.json says exactly which network was trained."""
    config = params.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model", {}), dict):
        return params
    import dataclasses

    from unirl.models import ModelConfig

    try:
        model = dataclasses.asdict(ModelConfig(**config.get("model", {})))
    except TypeError:
        return params  # an unknown model key: the config's own validation reports it
    model = json.loads(json.dumps(model))
    if config.get("normalize_observations"):
        model["normalize_observations"] = True
        model["normalize_clip"] = float(config.get("normalize_clip", model["normalize_clip"]))
    return dict(params, config=dict(config, model=model))


def summary_writer_class():
    """tensorboardX's SummaryWriter, imported without pulling in torch (tensorboardX imports torch
    when it can, only to accept torch tensors; unirl logs Python floats), or None if not installed."""
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # makes `import torch` raise ImportError inside tensorboardX
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    finally:
        if blocked and "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]
    return SummaryWriter


def tensorboard_scalars(result: dict) -> dict:
    """The finite numeric entries of a result (bools, lists and NaN left out), as floats, by key.

    NaN (no episode has ended yet) is left out: TensorBoard draws no point there instead of tensorboardX
    printing "NaN or Inf found in input tensor" once per key."""
    out = {}
    for k, v in result.items():
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            continue
        if np.isfinite(v):
            out[k] = float(v)
    return out


class RunLogger:
    """Writes a run directory. tensorboard=True (default) also writes TensorBoard event files:
    one scalar per numeric result key per iteration, at step timesteps_total."""

    def __init__(self, logdir: str, params: dict, tensorboard: bool = True):
        self.logdir = logdir
        os.makedirs(logdir, exist_ok=True)
        with open(os.path.join(logdir, "params.json"), "w") as f:
            json.dump(resolve_params(params), f, indent=1, sort_keys=True)
        self._json = open(os.path.join(logdir, "result.json"), "a")
        self._csv_file = open(os.path.join(logdir, "progress.csv"), "a", newline="")
        self._csv = None
        self._tensorboard = tensorboard
        self._tb = None

    def _tb_writer(self, result: dict):
        if self._tb is None and self._tensorboard:
            cls = summary_writer_class()
            if cls is None:
                self._tensorboard = False
                print("unirl: tensorboardX is not installed, so the run directory has no TensorBoard event files; "
                      "install it with `pip install tensorboardX`.", file=sys.stderr)
                return None
            # A resumed run redoes the iterations after its checkpoint: TensorBoard drops the earlier
            # files' events from this step on (purge_step), so each step appears once.
            resumed = bool(glob.glob(os.path.join(self.logdir, "events.out.tfevents.*")))
            step = result.get("timesteps_total")
            self._tb = cls(self.logdir, purge_step=int(step) if resumed and step is not None else None,
                           flush_secs=30)
        return self._tb

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
        tb = self._tb_writer(row)
        if tb is not None:
            step = int(row.get("timesteps_total") or row.get("iteration") or 0)
            for k, v in tensorboard_scalars(row).items():
                tb.add_scalar(k, v, global_step=step)
            tb.flush()

    def close(self) -> None:
        self._json.close()
        self._csv_file.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
