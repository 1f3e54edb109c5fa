"""unirl: reinforcement-learning algorithms written once, run on torch, tf or jax, on any backend, reproducibly.

`import unirl` imports no deep-learning framework and no backend library; they load when a
run asks for them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from unirl.errors import UnirlError, WorkerDiedError, WorkerError
from unirl.callbacks import Callbacks


def get_algorithm_class(name: str):
    """The Algorithm class for a registered name such as "PPO"."""
    from unirl.registry import get_algorithm_class as _get

    return _get(name)


def build(algo: str, config: dict | None = None, replay_schedule: str | None = None, **overrides):
    """Build an algorithm from its name and a config dict: `unirl.build("PPO", {"num_workers": 2})`;
    `callbacks=` takes a unirl.Callbacks (hooks run on the driver), other keywords are config keys.

    `replay_schedule`: a run folder or checkpoint of an asynchronous run of this algorithm; its recorded arrival
    schedule is replayed (config key `arrival_schedule`), which refuses a synchronous algorithm, another
    algorithm's run and another number of workers, each in one sentence."""
    cls = get_algorithm_class(algo)
    if replay_schedule is not None:
        from unirl.execution.schedule import replay_config

        callbacks = overrides.pop("callbacks", None)
        config = replay_config(cls, dict(config or {}, **overrides), replay_schedule)
        return cls(config, callbacks=callbacks)
    return cls(config, **overrides)


def restore(path: str, resume: bool = False, trust_checkpoint: bool = False, **overrides):
    """An algorithm restored from a checkpoint folder (or a run folder's latest whole checkpoint).

    resume=True also restores the workers' env states (exact continuation). A checkpoint naming
    code outside unirl's registries (an import path as algorithm, backend, framework or env) is
    refused unless trust_checkpoint=True: loading it would import and run that code. The class is
    found by the checkpoint's registered algorithm name, or else by the import path of the class
    that saved it (a plugin algorithm: code outside the registries, so it needs trust_checkpoint)."""
    from unirl.checkpoint import check_trusted, load_latest
    from unirl.registry import checkpoint_algorithm_class

    folder, _, state = load_latest(path)
    check_trusted(state, overrides, trust_checkpoint)
    return checkpoint_algorithm_class(state).from_checkpoint(folder, resume=resume,
                                                             trust_checkpoint=trust_checkpoint, **overrides)


__all__ = ["build", "Callbacks", "restore", "get_algorithm_class", "UnirlError", "WorkerError", "WorkerDiedError", "__version__"]
