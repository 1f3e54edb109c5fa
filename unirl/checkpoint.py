"""Checkpoints: named NumPy arrays in an .npz (framework-free names) plus JSON state."""
from __future__ import annotations

import json
import os

import numpy as np

from unirl.errors import UnirlError

WEIGHTS_FILE = "weights.npz"
STATE_FILE = "state.json"


def save_checkpoint(path: str, arrays: dict[str, np.ndarray], state: dict) -> str:
    os.makedirs(path, exist_ok=True)
    tmp = os.path.join(path, WEIGHTS_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, os.path.join(path, WEIGHTS_FILE))
    with open(os.path.join(path, STATE_FILE + ".tmp"), "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(os.path.join(path, STATE_FILE + ".tmp"), os.path.join(path, STATE_FILE))
    return path


def load_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, state) from a checkpoint folder (or a run folder: its latest checkpoint)."""
    path = resolve_checkpoint(path)
    with np.load(os.path.join(path, WEIGHTS_FILE)) as z:
        arrays = {k: z[k] for k in z.files}
    with open(os.path.join(path, STATE_FILE)) as f:
        state = json.load(f)
    return arrays, state


def resolve_checkpoint(path: str) -> str:
    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return path
    ckdir = os.path.join(path, "checkpoints")
    if os.path.isdir(ckdir):
        found = sorted(d for d in os.listdir(ckdir) if os.path.isfile(os.path.join(ckdir, d, STATE_FILE)))
        if found:
            return os.path.join(ckdir, found[-1])
    raise UnirlError(f"no checkpoint at `{path}`: expected {STATE_FILE} and {WEIGHTS_FILE} there "
                     f"(or a run folder with checkpoints/).")
