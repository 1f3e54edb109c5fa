"""A backend of your own, certified by the conformance suite.

    python examples/third_party_backend.py            # trains PPO on it, then runs the suite on it
    PYTHONPATH=. unirl conformance --quick --framework torch --backend examples.third_party_backend:InlineBackend --algo PPO

(From the repository root; `PYTHONPATH=.` makes `examples` importable by the `unirl` command.) The backend runs every worker in the
driver's process and each call when it is made: the smallest thing that meets the protocol of
`unirl.backends.base.Backend` (spawn, call, wait, get, shutdown). The suite checks level 1 (the
protocol: order, waiting, errors carried back, big arrays bit-exact, clean shutdown), level 2 (a
run repeats bit for bit) and level 3 (its results equal the local backend's, bit for bit, with 1
to 4 workers). A process-based backend leaves `runs_in_driver` False, and the suite then also
kills one of its workers and expects `WorkerDiedError`.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import traceback

import unirl
from unirl.backends.base import Backend, Future, WorkerHandle
from unirl.errors import WorkerError


class Done(Future):
    """A call that already ran: its value or the error it raised."""

    def __init__(self, worker_id, value=None, error=None):
        self.worker_id, self.value, self.error = worker_id, value, error


class InlineBackend(Backend):
    """Workers in this process; each call runs at once."""

    name = "inline"
    runs_in_driver = True  # workers are in this process: the suite skips the killed-worker check

    def __init__(self, **options):
        self.workers = []

    def spawn(self, worker_cls, args_list):
        start = len(self.workers)
        self.workers += [worker_cls(*args) for args in args_list]
        return [WorkerHandle(i) for i in range(start, len(self.workers))]

    def call(self, handle, method, *args, **kwargs):
        try:
            return Done(handle.worker_id, value=getattr(self.workers[handle.worker_id], method)(*args, **kwargs))
        except Exception as e:
            return Done(handle.worker_id, error=WorkerError(handle.worker_id, traceback.format_exc(), type(e).__name__))

    def wait(self, futures, num_returns=1, timeout=None):
        futures = list(futures)
        return futures[:num_returns], futures[num_returns:]

    def get(self, futures, timeout=None):
        if isinstance(futures, Future):
            if futures.error is not None:
                raise futures.error
            return futures.value
        return [self.get(f) for f in futures]  # in the order asked, never arrival order

    def shutdown(self):
        for w in self.workers:
            getattr(w, "close", lambda: None)()
        self.workers.clear()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2048)
    p.add_argument("--levels", default="1,2,3", help="conformance levels to run (4 compares frameworks)")
    args = p.parse_args(argv)
    path = f"{__name__ if __name__ != '__main__' else 'examples.third_party_backend'}:InlineBackend"
    digests = []
    for backend in ("local", path):
        with unirl.build("PPO", {"env": "CartPole-v1", "backend": backend, "num_workers": 2,
                                 "num_envs_per_worker": 4}) as algo:
            while (result := algo.train())["timesteps_total"] < args.steps:
                pass
        digests.append(result["weights_digest"])
    print(f"weights digest on local {digests[0]}, on {path} {digests[1]}")
    return subprocess.call([sys.executable, "-m", "unirl.cli", "conformance", "--quick", "--framework", "torch",
                            "--backend", path, "--algo", "PPO", "--levels", args.levels])


if __name__ == "__main__":
    sys.exit(main())
