"""Callbacks: user code run on the driver at points of the training loop.

Subclass `Callbacks`, override the hooks you need, and pass an instance (or the class, or a
list of them) as `unirl.build("PPO", config, callbacks=MyCallbacks())` or
`Algorithm(config, callbacks=...)`. Every hook runs in the driver's process, in the order:
`on_episode_end` for each episode an iteration's batches finished (as the algorithm records them,
in global env order), then `on_train_result` once with the iteration's result, and
`on_checkpoint` after each `save()`. A hook that raises stops `train()` / `save()` with its
exception.

For example, Weights & Biases or MLflow logging::

    class WandbLogging(unirl.Callbacks):
        def __init__(self, **init):
            import wandb
            self.run = wandb.init(**init)

        def on_train_result(self, algorithm, result):
            self.run.log({k: v for k, v in result.items() if isinstance(v, (int, float))},
                         step=result["timesteps_total"])
"""
from __future__ import annotations

from unirl.errors import UnirlError


class Callbacks:
    """Hooks called on the driver; the default of each does nothing."""

    def on_train_result(self, algorithm, result: dict) -> None:
        """After each training iteration, with its result (the dict `train()` returns; keys added
        to it here appear in the returned result, result.json and TensorBoard)."""

    def on_episode_end(self, algorithm, episode_return: float, episode_length: int) -> None:
        """For each episode that ended in a batch the algorithm recorded (`Algorithm.record_batch`),
        in the batch's order, before the iteration's `on_train_result`."""

    def on_checkpoint(self, algorithm, path: str) -> None:
        """After `algorithm.save()` wrote a whole checkpoint folder at `path`."""


class CallbackList(Callbacks):
    """Several callbacks called in order."""

    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def on_train_result(self, algorithm, result):
        """Each callback's on_train_result, in order."""
        for c in self.callbacks:
            c.on_train_result(algorithm, result)

    def on_episode_end(self, algorithm, episode_return, episode_length):
        """Each callback's on_episode_end, in order."""
        for c in self.callbacks:
            c.on_episode_end(algorithm, episode_return, episode_length)

    def on_checkpoint(self, algorithm, path):
        """Each callback's on_checkpoint, in order."""
        for c in self.callbacks:
            c.on_checkpoint(algorithm, path)


def _one(c) -> Callbacks:
    if isinstance(c, type) and issubclass(c, Callbacks):
        return c()
    if isinstance(c, Callbacks):
        return c
    raise UnirlError(f"callbacks must be a unirl.Callbacks instance or subclass (or a list of them), got {c!r}.")


def make_callbacks(callbacks) -> Callbacks:
    """A Callbacks from None, an instance, a subclass, or a list/tuple of those."""
    if callbacks is None:
        return Callbacks()
    if isinstance(callbacks, (list, tuple)):
        items = [_one(c) for c in callbacks]
        return items[0] if len(items) == 1 else CallbackList(items)
    return _one(callbacks)


def overrides_episode_end(callbacks: Callbacks) -> bool:
    """Whether on_episode_end does anything (so recording a batch can skip the per-episode loop)."""
    if isinstance(callbacks, CallbackList):
        return any(overrides_episode_end(c) for c in callbacks.callbacks)
    return type(callbacks).on_episode_end is not Callbacks.on_episode_end
