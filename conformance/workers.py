"""Worker classes the backend checks spawn; importable in child processes, Ray actors and MPI ranks."""
from __future__ import annotations

import logging
import os
import signal
import socket
import time

import numpy as np

logger = logging.getLogger("unirl.conformance.echo")

#: Elements of the big float32 array that must reach every worker bit-exact (more than a million).
BIG_FLOAT32_ELEMENTS = (1 << 20) + 4099


def special_float32(n: int = BIG_FLOAT32_ELEMENTS, seed: int = 0) -> np.ndarray:
    """A reproducible float32 array of `n` elements: NaN, -0.0, infinities, a subnormal and the extremes at the
    front, then normal values with full 24-bit mantissas (a float16 or bfloat16 rounding changes most of them)."""
    a = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    f = np.finfo(np.float32)
    a[:8] = [np.nan, -0.0, np.inf, -np.inf, f.smallest_subnormal, f.max, f.tiny, -f.max]
    return a


def policy_weights(seed: int = 0) -> np.ndarray:
    """A real flat weight vector: the seeded init of the default actor-critic MLP for CartPole (9,155 float32)."""
    from unirl.distributions import Categorical
    from unirl.models import ActorCritic, ModelConfig

    module = ActorCritic(4, Categorical(2), ModelConfig())
    return module.layout.flatten(module.init_params(seed)).astype(np.float32)


#: The arrays a worker can make itself, by name (so both directions can be checked against the same bits).
MAKERS = {"special_float32": special_float32, "policy_weights": policy_weights}


def bit_difference(expected: np.ndarray, actual) -> dict:
    """{} when bit-identical, else the first differing index, both values and how many elements differ."""
    actual = np.asarray(actual)
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        return {"expected_shape": list(expected.shape), "actual_shape": list(actual.shape),
                "expected_dtype": str(expected.dtype), "actual_dtype": str(actual.dtype)}
    e = np.ascontiguousarray(expected).reshape(-1)
    a = np.ascontiguousarray(actual).reshape(-1)
    bad = np.flatnonzero(e.view(f"u{e.itemsize}") != a.view(f"u{a.itemsize}"))
    if not len(bad):
        return {}
    i = int(bad[0])
    return {"first_index": i, "expected": repr(e[i]), "actual": repr(a[i]), "differing_elements": int(len(bad))}


class Echo:
    """A stateful worker for protocol checks: echoes, sleeps, raises, crashes, moves arrays, logs."""

    def __init__(self, tag=None):
        self.tag = tag
        self.calls = 0

    def echo(self, value):
        self.calls += 1
        return value

    def tagged(self, value):
        """(tag, number of calls so far, value): shows calls on one worker run in order."""
        self.calls += 1
        return self.tag, self.calls, value

    def noop(self):
        return None

    def sleep(self, seconds, value=None):
        time.sleep(seconds)
        return value

    def fail(self, message="failure requested by the check"):
        raise ValueError(message)

    def crash(self, how="exit"):
        """End this process without answering: `exit` (os._exit(3)) or `kill` (SIGKILL to itself)."""
        logging.shutdown()
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)

    def array_checksum(self, array):
        """(shape, dtype name, float64 sum) of an array received from the driver."""
        return array.shape, array.dtype.name, float(np.sum(array, dtype=np.float64))

    def array_roundtrip(self, array):
        return array

    def received_difference(self, array, maker, *args):
        """How `array` (sent by the driver) differs from MAKERS[maker](*args) made here: {} if bit-identical."""
        return bit_difference(MAKERS[maker](*args), array)

    def make(self, maker, *args):
        """MAKERS[maker](*args), made in the worker (to check the way back)."""
        return MAKERS[maker](*args)

    def make_array(self, nbytes, seed=0):
        """A reproducible float64 array of about `nbytes` bytes, made in the worker."""
        return np.random.default_rng(seed).standard_normal(max(1, nbytes // 8))

    def log(self, message, level=logging.WARNING):
        logger.log(level, message)
        return True

    def whereami(self):
        """(pid, hostname) of the process hosting this worker."""
        return os.getpid(), socket.gethostname()

    def close(self):
        self.closed = True
