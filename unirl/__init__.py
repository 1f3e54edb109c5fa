"""unirl: reinforcement-learning algorithms written once, run on torch, tf or jax, on any backend, reproducibly.

`import unirl` imports no deep-learning framework and no backend library; they load when a
run asks for them.
"""
from __future__ import annotations

__version__ = "0.1.0"

from unirl.errors import UnirlError, WorkerDiedError, WorkerError
from unirl.callbacks import Callbacks


def get_algorithm_class(name: str):
    """The Algorithm class registered under `name`.

    Args:
        name: A registered algorithm name in any case ("PPO", "ppo"), "NAME[variant]" for one of its
            conformance variants, or an import path "pkg.module:Class" for an algorithm of your own.

    Returns:
        The `unirl.algorithm.Algorithm` subclass; its `config_class` lists every option.

    Raises:
        UnirlError: the name is unknown (with a "did you mean") or the import path does not load.
    """
    from unirl.registry import get_algorithm_class as _get

    return _get(name)


def build(algo: str, config: dict | None = None, replay_schedule: str | None = None, **overrides):
    """Build an algorithm from its name and a config dict.

    Example:
        ```python
        with unirl.build("PPO", {"env": "CartPole-v1", "num_workers": 2}) as algo:
            result = algo.train()
        ```

    Args:
        algo: The algorithm's registered name (any case) or import path "pkg.module:Class".
        config: Config keys of the algorithm's config dataclass (`get_algorithm_class(algo).config_class`);
            unknown keys are refused with a suggestion.
        replay_schedule: A run folder or checkpoint of an asynchronous run of this algorithm; its recorded
            arrival schedule is replayed (config key `arrival_schedule`), which refuses a synchronous
            algorithm, another algorithm's run and another number of workers, each in one sentence.
        **overrides: `callbacks=` a `unirl.Callbacks` (hooks run on the driver); other keywords are config
            keys, over those of `config`.

    Returns:
        The built algorithm, its workers started; call `train()` per iteration and `stop()` (or use it as a
        context manager) at the end.

    Raises:
        UnirlError: an unknown algorithm, config key or value, env or extra that is not installed.
    """
    cls = get_algorithm_class(algo)
    if replay_schedule is not None:
        from unirl.execution.schedule import replay_config

        callbacks = overrides.pop("callbacks", None)
        config = replay_config(cls, dict(config or {}, **overrides), replay_schedule)
        return cls(config, callbacks=callbacks)
    return cls(config, **overrides)


def restore(path: str, resume: bool = False, trust_checkpoint: bool = False, **overrides):
    """An algorithm restored from a checkpoint folder, or from a run folder's latest whole checkpoint.

    The class is found by the checkpoint's registered algorithm name, or else by the import path of the
    class that saved it (a plugin algorithm: code outside the registries, so it needs trust_checkpoint).

    Args:
        path: A checkpoint folder (`weights.npz` + `state.json`) or a run folder.
        resume: Also restore the workers' env states, for an exact continuation of the run.
        trust_checkpoint: Allow a checkpoint that names code outside unirl's registries (an import path as
            algorithm, backend, framework or env); loading it imports and runs that code.
        **overrides: Config keys to change, e.g. `framework="jax"` to load torch weights into JAX, or
            `backend=`.

    Returns:
        The restored algorithm, ready to `evaluate`, `compute_actions` or `train` on.

    Raises:
        UnirlError: no whole checkpoint at `path`, or an untrusted name in it.
    """
    from unirl.checkpoint import check_trusted, load_latest
    from unirl.registry import checkpoint_algorithm_class

    folder, _, state = load_latest(path)
    check_trusted(state, overrides, trust_checkpoint)
    return checkpoint_algorithm_class(state).from_checkpoint(folder, resume=resume,
                                                             trust_checkpoint=trust_checkpoint, **overrides)


__all__ = ["build", "Callbacks", "restore", "get_algorithm_class", "UnirlError", "WorkerError", "WorkerDiedError", "__version__"]
