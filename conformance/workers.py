"""Worker classes the backend checks spawn; importable in child processes, Ray actors and MPI ranks."""
from __future__ import annotations

import logging
import os
import signal
import socket
import time

import numpy as np

logger = logging.getLogger("unirl.conformance.echo")


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
