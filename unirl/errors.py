"""The one exception type for errors a user can cause, and helpers that phrase them."""
from __future__ import annotations

import difflib
from typing import Iterable


class UnirlWarning(UserWarning):
    """Something in a run the user should look at (it goes on): Q-values far beyond what the rewards allow, say."""


class UnirlError(ValueError):
    """An error the user can fix: a bad config key, an unknown env, a missing extra, ...

    The message is one clear sentence (plus a suggestion where one helps); the CLI prints
    it without a traceback.
    """


class WorkerError(RuntimeError):
    """A task raised inside a worker; carries the worker's id and its traceback."""

    def __init__(self, worker_id, remote_traceback: str, exc_type: str = "Exception"):
        self.worker_id = worker_id
        self.remote_traceback = remote_traceback
        self.exc_type = exc_type
        last = remote_traceback.strip().splitlines()[-1] if remote_traceback.strip() else exc_type
        super().__init__(
            f"worker {worker_id} raised {last}\n--- traceback from worker {worker_id} ---\n"
            f"{remote_traceback.rstrip()}"
        )

    def __reduce__(self):
        return (WorkerError, (self.worker_id, self.remote_traceback, self.exc_type))


class WorkerDiedError(RuntimeError):
    """A worker process ended without answering (killed, segfault, out of memory)."""

    def __init__(self, worker_id, detail: str = ""):
        self.worker_id = worker_id
        self.detail = detail
        super().__init__(f"worker {worker_id} died{': ' + detail if detail else ''}")

    def __reduce__(self):
        return (WorkerDiedError, (self.worker_id, self.detail))


class NonFiniteWeightsError(UnirlError):
    """Training made the weights NaN or infinite (a learning rate too high, a reward out of scale, ...)."""

    def __init__(self, algorithm: str, iteration: int):
        self.iteration = iteration
        super().__init__(f"{algorithm}'s weights became NaN or infinite in iteration {iteration}; lower the "
                         "learning rate (`lr`, `lr_schedule`) or clip gradients (`grad_clip`).")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' Did you mean `x`?' for the nearest choice (compared without case), or '' when nothing is close."""
    by_lower = {}
    for c in choices:
        by_lower.setdefault(str(c).lower(), c)
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.5)
    return f" Did you mean `{by_lower[close[0]]}`?" if close else ""


def missing_extra(module: str, extra: str, what: str) -> UnirlError:
    """The error for an optional dependency that is not installed."""
    return UnirlError(
        f"{what} needs the `{module}` package, which is not installed; "
        f"install it with `pip install 'unirl[{extra}]'`."
    )
