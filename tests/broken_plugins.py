"""Deliberately broken third-party plugins that the conformance suite must catch (see test_conformance_catches_faults
and, for the algorithms at the end, test_conformance_catches_compositions).

Importable by path, as a user's plugin would be: `broken_plugins:ArrivalOrderBackend` with tests/
on sys.path (pytest puts it there; set PYTHONPATH for a subprocess).
"""
from __future__ import annotations

import concurrent.futures
import traceback
import weakref
from dataclasses import dataclass

import numpy as np

from unirl.backends import base
from unirl.backends.local import Backend as LocalBackend
from unirl.errors import WorkerError
from unirl.frameworks.torch import Adapter as TorchAdapter

#: The factor ScaledGradTorchAdapter multiplies every gradient by.
GRADIENT_FACTOR = 1.001


class _ThreadFuture(base.Future):
    def __init__(self, worker_id, future):
        self.worker_id = worker_id
        self.future = future


class ArrivalOrderBackend(LocalBackend):
    """Workers built as the local backend builds them, each with one thread to run its calls (so a
    worker's calls run in order); `get` of a list returns the values in the order the tasks
    finished -- the bug: the protocol promises the order asked."""

    name = "arrival-order"
    #: The workers are threads of the driver: the protocol checks must not end one (it would end the driver).
    runs_in_driver = True

    def __init__(self, **options):
        super().__init__(**options)
        self._pools = {}

    def spawn(self, worker_cls, args_list):
        handles = super().spawn(worker_cls, args_list)
        for h in handles:
            self._pools[h.worker_id] = concurrent.futures.ThreadPoolExecutor(1)
        return handles

    def call(self, handle, method, *args, **kwargs):
        wid = handle.worker_id

        def task():
            try:
                return getattr(self._workers[wid], method)(*args, **kwargs)
            except Exception as e:
                raise WorkerError(wid, traceback.format_exc(), type(e).__name__) from None

        return _ThreadFuture(wid, self._pools[wid].submit(task))

    def wait(self, futures, num_returns=1, timeout=None):
        futures = list(futures)
        by_inner = {f.future: f for f in futures}
        ready = []
        try:
            for inner in concurrent.futures.as_completed(by_inner, timeout=timeout):
                ready.append(by_inner[inner])
                if len(ready) >= num_returns:
                    break
        except concurrent.futures.TimeoutError:
            pass
        return ready, [f for f in futures if f not in ready]

    def get(self, futures, timeout=None):
        if isinstance(futures, base.Future):
            return futures.future.result(timeout)
        by_inner = {f.future: f for f in futures}
        # BUG (deliberate): arrival order instead of the order of `futures`.
        return [inner.result() for inner in concurrent.futures.as_completed(by_inner, timeout=timeout)]

    def shutdown(self):
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
        super().shutdown()


def corrupt_last_element(value):
    """`value` with the last element of every float array in it moved by one unit in the last place
    (the smallest possible change; dicts, lists and tuples are walked)."""
    if isinstance(value, np.ndarray) and value.size and value.dtype.kind == "f":
        out = value.copy()
        flat = out.reshape(-1)
        flat[-1] = np.nextafter(flat[-1], np.inf)
        return out
    if isinstance(value, dict):
        return type(value)({k: corrupt_last_element(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(corrupt_last_element(v) for v in value)
    return value


class CorruptLastElementBackend(LocalBackend):
    """The local backend, except that every array coming back from a worker has its last element changed."""

    name = "corrupt-last-element"

    def get(self, futures, timeout=None):
        if isinstance(futures, base.Future):
            return corrupt_last_element(super().get(futures, timeout))
        return [self.get(f, timeout) for f in futures]


class ScaledGradTorchAdapter(TorchAdapter):
    """The torch adapter with every gradient multiplied by GRADIENT_FACTOR (1.001)."""

    name = "torch-scaled-grad"

    def value_and_grad(self, fn):
        inner = super().value_and_grad(fn)

        def wrapped(x, *args):
            value_aux, grad = inner(x, *args)
            return value_aux, grad * GRADIENT_FACTOR

        return wrapped


class _LeakyOps(type(TorchAdapter.ops)):
    def relu(self, x):
        import torch

        return torch.nn.functional.leaky_relu(x, 0.2)


class LeakyReluTorchAdapter(TorchAdapter):
    """The torch adapter whose relu leaks (slope 0.2 below zero): a model loaded into it computes other outputs."""

    name = "torch-leaky-relu"
    ops = _LeakyOps()


class CorruptThirdWorkerBackend(LocalBackend):
    """The local backend, except that arrays coming back from the third worker (worker id 2) have their last
    element changed: a fault that runs with 1 or 2 workers never meet."""

    name = "corrupt-third-worker"

    def get(self, futures, timeout=None):
        if isinstance(futures, base.Future):
            value = super().get(futures, timeout)
            return corrupt_last_element(value) if futures.worker_id == 2 else value
        return [self.get(f, timeout) for f in futures]


#: RoundBigFloat32Backend rounds float32 arrays with more than this many elements.
ROUND_ABOVE_ELEMENTS = 1 << 20


def round_big_float32(value):
    """`value` with every float32 array of more than ROUND_ABOVE_ELEMENTS elements rounded to float16 precision
    (a "compressing" transport; dicts, lists and tuples are walked)."""
    if isinstance(value, np.ndarray) and value.dtype == np.float32 and value.size > ROUND_ABOVE_ELEMENTS:
        with np.errstate(over="ignore"):
            return value.astype(np.float16).astype(np.float32)
    if isinstance(value, dict):
        return type(value)({k: round_big_float32(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(round_big_float32(v) for v in value)
    return value


class RoundBigFloat32Backend(LocalBackend):
    """The local backend, except that float32 arrays of more than a million elements are sent and returned at
    float16 precision (both directions); small arrays, such as a PPO policy's weights, pass unharmed."""

    name = "round-big-float32"

    def call(self, handle, method, *args, **kwargs):
        return super().call(handle, method, *round_big_float32(args), **round_big_float32(kwargs))

    def get(self, futures, timeout=None):
        if isinstance(futures, base.Future):
            return round_big_float32(super().get(futures, timeout))
        return [self.get(f, timeout) for f in futures]


# -- algorithms ----------------------------------------------------------------------------------------------
from unirl.algorithms.async_dqn import AsyncDQN, async_dqn_rows  # noqa: E402
from unirl.algorithms.dqn import DQN  # noqa: E402
from unirl.algorithms.ppo import PPO, PPOConfig  # noqa: E402
from unirl.conformance_spec import REPLAYABLE, ConformanceSpec  # noqa: E402
from unirl.execution import loops  # noqa: E402

#: The target network each worker policy saw first, by id(policy): (a weak reference to it, the flat target).
_FIRST_TARGETS: dict = {}


def stale_rows(policy, batch, config) -> dict:
    """Async DQN's worker-side rows, after setting the policy's target network back to the one it was first sent
    (the bug: a worker that keeps the target it first saw, so its gradients ignore every later target sync)."""
    entry = _FIRST_TARGETS.get(id(policy))
    if entry is None or entry[0]() is not policy:  # a new policy (an id can be reused after the old one is gone)
        entry = _FIRST_TARGETS[id(policy)] = (weakref.ref(policy),
                                              np.array(policy.get_flat_weights("target_params"), copy=True))
    policy.set_flat_weights(entry[1], "target_params")  # (bumps this copy's version; the versions used are taken
    return async_dqn_rows(policy, batch, config)          # before the rows, so only the gradient shows the bug)


class StaleTargetAsyncDQN(AsyncDQN):
    """Async DQN whose workers learn against the first target network they were sent, never a synced one. Its
    runs are deterministic (levels 2 and 3 replay them bit for bit); only the worker-updates audit sees it."""

    name = "STALE_TARGET_DQN"
    execution = loops.AsyncGradients(postprocess=stale_rows)
    conformance = ConformanceSpec(
        # a target sync every 2 gradients: 2 workers x 6 envs x 4 steps = 24 steps a gradient, 4 gradients an
        # iteration, so 4 syncs within the 2 quick iterations
        run_config=dict(AsyncDQN.conformance.run_config, target_update_period=2),
        reproducibility=REPLAYABLE, levels=(1, 3, 4), quick_iterations=2,
    )


class MisspeltExplorationDQN(DQN):
    """DQN whose exploration() misspells `epsilon`: the rollout workers refuse the unknown option, so every
    run fails (before the check, it sampled greedily: no exploration at all)."""

    name = "MISSPELT_EXPLORATION_DQN"

    def exploration(self, worker_id: int | None = None) -> dict:
        return {"epsilom": self.epsilon()}


@dataclass
class UnusedKeyPPOConfig(PPOConfig):
    #: A coefficient that nothing reads (the bug: accepted, validated, saved, and inert).
    mystery_coeff: float = 1.0


class UnusedKeyPPO(PPO):
    """PPO with a config key it never reads."""

    name = "UNUSED_KEY_PPO"
    config_class = UnusedKeyPPOConfig
