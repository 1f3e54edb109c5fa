"""Checkpoints: named NumPy arrays in an .npz (framework-free names), JSON state, and (for resuming) the
workers' env states in their own file.

A checkpoint folder holds:

- `weights.npz`: the learner's arrays (parameters, optimizer state, filters, replay buffers);
  read with `allow_pickle=False`, so it can hold only numbers.
- `state.json`: counters, the learner's RNG state, the config, the algorithm's name.
- `worker_state.pkl` (optional): the rollout workers' env states, per-env noise and episode
  accumulators, in global env order, pickled with cloudpickle. Unpickling runs code, so it is
  read only when resuming (`resume=True`, `unirl train --resume`) and only if its HMAC matches
  this user's key (`~/.unirl/checkpoint_key`, made on first use; `UNIRL_HOME` moves it): a
  checkpoint written by this user on this machine (or one sharing the key). Anything else needs
  `trust_checkpoint=True` / `--trust-checkpoint`.

Writing is atomic: the files go to a temporary folder beside the target (`.tmp-<name>-<pid>`), are
fsynced, and the folder is renamed into place (then its parent is fsynced), so a checkpoint is
whole or absent, whatever moment the process is killed. Leftover temporary folders are removed
by the next save into the same parent. The latest checkpoint of a run is chosen by iteration
number, not by sorting names; a damaged one is reported in one line naming the file and skipped
for the previous whole one (`load_latest`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import zipfile

import numpy as np

from unirl.errors import UnirlError

WEIGHTS_FILE = "weights.npz"
STATE_FILE = "state.json"
WORKER_FILE = "worker_state.pkl"
CHECKPOINT_FILES = (WEIGHTS_FILE, STATE_FILE, WORKER_FILE)
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
_NAME = re.compile(r"^checkpoint_(\d+)$")

logger = logging.getLogger("unirl.checkpoint")


class CheckpointError(UnirlError):
    """A checkpoint that cannot be read (missing or damaged file); the message names the file."""

    def __init__(self, message: str, path: str = ""):
        super().__init__(message)
        self.path = path


# -- writing ----------------------------------------------------------------------------------------

def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_leftovers(parent: str) -> None:
    """Remove temporary folders that an interrupted save left in `parent` (not those of live processes)."""
    from unirl.backends.base import pid_alive

    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not (name.startswith(_TMP_PREFIX) or name.startswith(_OLD_PREFIX)):
            continue
        pid = name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and pid_alive(int(pid)):
            continue  # another process is writing it right now
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def save_checkpoint(path: str, arrays: dict[str, np.ndarray], state: dict,
                    worker_state: bytes | None = None) -> str:
    """Write a checkpoint folder atomically (temporary folder, fsync, rename) and return its path."""
    path = os.path.abspath(path)
    parent, name = os.path.dirname(path), os.path.basename(path)
    os.makedirs(parent, exist_ok=True)
    clean_leftovers(parent)
    if os.path.isdir(path):
        foreign = [f for f in os.listdir(path) if f not in CHECKPOINT_FILES]
        if foreign:
            raise UnirlError(f"cannot write a checkpoint to `{path}`: the folder exists and holds other files "
                             f"({', '.join(sorted(foreign)[:3])}); choose an empty or new folder.")
    tmp = os.path.join(parent, f"{_TMP_PREFIX}{name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    np.savez(os.path.join(tmp, WEIGHTS_FILE), **arrays)
    state = dict(state)
    if worker_state is not None:
        with open(os.path.join(tmp, WORKER_FILE), "wb") as f:
            f.write(worker_state)
        state["worker_state_hmac"] = _sign(worker_state)
    with open(os.path.join(tmp, STATE_FILE), "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    for f in os.listdir(tmp):
        _fsync_file(os.path.join(tmp, f))
    _fsync_dir(tmp)
    if os.path.isdir(path):
        old = os.path.join(parent, f"{_OLD_PREFIX}{name}-{os.getpid()}")
        os.rename(path, old)
        os.rename(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, path)
    _fsync_dir(parent)
    return path


def checkpoint_name(iteration: int) -> str:
    """The folder name of the checkpoint written after `iteration` ("checkpoint_000042")."""
    return f"checkpoint_{iteration:06d}"


def prune_checkpoints(run_dir: str, keep: int | None) -> list[str]:
    """Delete all but the newest `keep` checkpoints of a run (by iteration number); returns those removed."""
    if not keep or keep < 1:
        return []
    found = list_checkpoints(run_dir)
    removed = []
    for _, path in found[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


# -- the key that signs worker_state.pkl ----------------------------------------------------------

def _key_path() -> str:
    home = os.environ.get("UNIRL_HOME") or os.path.join(os.path.expanduser("~"), ".unirl")
    return os.path.join(home, "checkpoint_key")


def _key() -> bytes:
    path = _key_path()
    try:
        with open(path, "rb") as f:
            key = f.read()
        if len(key) >= 32:
            return key
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    key = os.urandom(32)
    tmp = f"{path}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    try:
        os.link(tmp, path)  # first writer wins if two processes race
    except FileExistsError:
        pass
    os.unlink(tmp)
    with open(path, "rb") as f:
        return f.read()


def _sign(data: bytes) -> str:
    return hmac.new(_key(), data, hashlib.sha256).hexdigest()


# -- reading --------------------------------------------------------------------------------------

def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, state) of one checkpoint folder; a missing or damaged file is a CheckpointError naming it."""
    wfile, sfile = os.path.join(path, WEIGHTS_FILE), os.path.join(path, STATE_FILE)
    try:
        with open(sfile) as f:
            state = json.load(f)
        if not isinstance(state, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file `{sfile}` is missing", sfile) from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file `{sfile}` is damaged ({type(e).__name__}: {e})", sfile) from None
    try:
        with np.load(wfile, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file `{wfile}` is missing", wfile) from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise CheckpointError(f"checkpoint file `{wfile}` is damaged ({type(e).__name__}: {e})", wfile) from None
    return arrays, state


def read_worker_state(path: str, state: dict, trust: bool = False):
    """The workers' states saved beside a checkpoint (unpickled), or None if it has none.

    Unpickling runs code: the file is read only if its HMAC matches this user's key, or `trust`.
    """
    wfile = os.path.join(path, WORKER_FILE)
    if not os.path.isfile(wfile):
        return None
    with open(wfile, "rb") as f:
        data = f.read()
    expected = state.get("worker_state_hmac")
    if not trust and not (isinstance(expected, str) and hmac.compare_digest(expected, _sign(data))):
        raise UnirlError(f"refusing to load `{wfile}`: it was not written by this user's unirl (its signature "
                         "does not match ~/.unirl/checkpoint_key), and unpickling it could run any code; pass "
                         "trust_checkpoint=True (--trust-checkpoint) if you trust where it came from.")
    import cloudpickle  # noqa: F401  (pickles of cloudpickle'd classes need it importable)
    import pickle

    try:
        return pickle.loads(data)
    except Exception as e:
        raise CheckpointError(f"checkpoint file `{wfile}` is damaged ({type(e).__name__}: {e})", wfile) from None


def list_checkpoints(run_dir: str) -> list[tuple[int, str]]:
    """(iteration, folder) of a run's checkpoints, oldest first, ordered by iteration number."""
    ckdir = os.path.join(run_dir, "checkpoints")
    try:
        names = os.listdir(ckdir)
    except OSError:
        return []
    found = []
    for d in names:
        m = _NAME.match(d)
        if m and os.path.isdir(os.path.join(ckdir, d)):
            found.append((int(m.group(1)), os.path.join(ckdir, d)))
    return sorted(found)


def load_latest(path: str, say=None) -> tuple[str, dict[str, np.ndarray], dict]:
    """(folder, arrays, state) of a checkpoint folder, or of a run folder's latest whole checkpoint.

    Damaged checkpoints of a run are skipped for the previous whole one; each skip is said in one
    line through `say` (default: a warning on the `unirl.checkpoint` logger).
    """
    say = say or logger.warning
    if os.path.isfile(os.path.join(path, STATE_FILE)) or os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        arrays, state = read_checkpoint(path)
        return path, arrays, state
    found = list_checkpoints(path)
    if not found:
        raise UnirlError(f"no checkpoint at `{path}`: expected {STATE_FILE} and {WEIGHTS_FILE} there "
                         f"(or a run folder with checkpoints/).")
    errors = []
    for _, ck in reversed(found):
        try:
            arrays, state = read_checkpoint(ck)
        except CheckpointError as e:
            errors.append(str(e))
            say(f"unirl: {e}; falling back to the previous checkpoint")
            continue
        return ck, arrays, state
    raise UnirlError(f"no whole checkpoint in `{path}`: {errors[-1]} (and {len(errors) - 1} more damaged).")


def load_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays, state) from a checkpoint folder (or a run folder: its latest whole checkpoint)."""
    _, arrays, state = load_latest(path)
    return arrays, state


def resolve_checkpoint(path: str) -> str:
    """The checkpoint folder `path` stands for: itself, or a run folder's latest whole checkpoint."""
    return load_latest(path)[0]


# -- what a checkpoint may name ---------------------------------------------------------------------

def check_trusted(state: dict, overrides: dict | None = None, trust: bool = False) -> None:
    """Refuse a checkpoint that names code outside unirl's registries, unless `trust`.

    A checkpoint's state names the algorithm (and the import path of its class), framework, backend
    and env to build; any of them may be an import path ("pkg.module:Attr"), and loading would
    import that module and call what it names (a crafted `"backend": "subprocess:Popen"` would run
    a command). Only registered names (an algorithm whose class is the registered one or one of its
    conformance variants, and env ids Gymnasium already knows, without a module prefix) pass; a
    plugin algorithm's class is refused like any other import path. The user's own overrides are
    trusted.
    """
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("algorithm"), str):
        raise CheckpointError(f"the checkpoint's {STATE_FILE} names no algorithm and config: it is not a unirl "
                              "algorithm checkpoint.")
    if trust:
        return
    from unirl.backends import BACKENDS
    from unirl.frameworks import FRAMEWORKS
    from unirl.conformance_spec import split_variant
    from unirl.registry import ALGORITHMS, checkpoint_algorithm_name

    overrides = overrides or {}
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    if checkpoint_algorithm_name(state) is None:
        path = state.get("algorithm_class")
        registered_path = isinstance(path, str) and split_variant(path)[0] in ALGORITHMS.values()
        what = (f"algorithm class is {path!r}" if path is not None and not registered_path
                else f"algorithm is {state['algorithm']!r}")
        raise UnirlError(f"refusing to load a checkpoint whose {what}: not one of unirl's registered algorithms, "
                         "and loading it would import and run that code; pass trust_checkpoint=True "
                         "(--trust-checkpoint) if you trust where it came from.")
    checks = []
    for key, registry in (("framework", FRAMEWORKS), ("backend", BACKENDS)):
        if key not in overrides and key in config:
            checks.append((key, config[key], registry))
    for what, value, registry in checks:
        if not isinstance(value, str) or value not in registry:
            raise UnirlError(f"refusing to load a checkpoint whose {what} is {value!r}: not one of unirl's "
                             f"registered {what}s, and loading it could import and run any code; pass "
                             "trust_checkpoint=True (--trust-checkpoint) if you trust where it came from.")
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    if "model" not in overrides and model.get("custom_module"):
        raise UnirlError(f"refusing to load a checkpoint whose model names the custom module "
                         f"{model['custom_module']!r}: loading it would import and run that code; pass "
                         "trust_checkpoint=True (--trust-checkpoint) if you trust where it came from.")
    multi_agent = config.get("multi_agent") if isinstance(config.get("multi_agent"), dict) else {}
    if "multi_agent" not in overrides and isinstance(multi_agent.get("policy_mapping"), str):
        raise UnirlError(f"refusing to load a checkpoint whose policy mapping is the function "
                         f"{multi_agent['policy_mapping']!r}: loading it would import and run that code; pass "
                         "trust_checkpoint=True (--trust-checkpoint) if you trust where it came from.")
    if "env" not in overrides and "env" in config:
        env = config["env"]
        import gymnasium as gym

        from unirl.multi_agent.env import is_pettingzoo_module

        if is_pettingzoo_module(env):  # a module of the installed PettingZoo / MPE2 packages: their own code only
            return
        from unirl.registry import checkpoint_algorithm_class

        if checkpoint_algorithm_class(state).config_class.env_loads_no_code(env):  # an OpenSpiel game name, say
            return
        if not isinstance(env, str) or ":" in env or env not in gym.registry:
            raise UnirlError(f"refusing to load a checkpoint whose env is {env!r}: not an env Gymnasium already "
                             "knows (an env named with a module imports that module); pass trust_checkpoint=True "
                             "(--trust-checkpoint) if you trust where it came from.")
