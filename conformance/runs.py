"""Recorded training runs (metrics and weights after every iteration) and their bit-for-bit comparison.

Levels 2 and 3 compare runs: a `RunSpec` names one (algorithm, framework, backend, worker count)
on a fixed config, `record_run` trains it and keeps every iteration's result (time fields
dropped) and flat weights, and `compare_runs` says where two records first differ.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

#: Result fields that measure wall time: never compared.
TIME_KEYS = frozenset({"time_this_iter_s", "time_total_s", "env_steps_per_s"})


@dataclass(frozen=True)
class RunSpec:
    """One training run: `config` holds the algorithm's options with `total_envs` instead of a per-worker count."""

    algo: str
    framework: str
    backend: str
    num_workers: int
    iterations: int
    config: tuple = ()  # sorted (key, value) pairs, so that a spec is hashable
    repeat: int = 0  # 0 for the first run of this spec, 1 for its second (level 2)

    @staticmethod
    def make(algo: str, framework: str, backend: str, num_workers: int, iterations: int, config: dict,
             repeat: int = 0) -> "RunSpec":
        import json

        return RunSpec(algo, framework, backend, num_workers, iterations,
                       tuple(sorted((k, json.dumps(v)) for k, v in config.items())), repeat)

    @property
    def label(self) -> str:
        n = self.num_workers
        return f"{self.algo}/{self.framework}/{self.backend} with {n} worker{'s' if n != 1 else ''}"

    def algorithm_config(self) -> dict:
        """The config dict for `unirl.build`: total envs split evenly over the workers."""
        import json

        cfg = {k: json.loads(v) for k, v in self.config}
        total = cfg.pop("total_envs")
        if total % self.num_workers:
            raise ValueError(f"{total} envs cannot be split evenly over {self.num_workers} workers")
        cfg.update(framework=self.framework, backend=self.backend, num_workers=self.num_workers,
                   num_envs_per_worker=total // self.num_workers)
        return cfg


@dataclass
class RunRecord:
    """What a run produced: per iteration, its result (time fields dropped) and the flat weights after it."""

    spec: RunSpec
    results: list = field(default_factory=list)
    weights: list = field(default_factory=list)
    duration_s: float = 0.0
    #: Why the run did not finish (an exception's message with the worker's traceback), or None.
    error: str | None = None


def record_run(spec: RunSpec) -> RunRecord:
    """Build the algorithm, train `spec.iterations` iterations, keep results and weights; always stops it."""
    import traceback

    import unirl

    rec = RunRecord(spec)
    t0 = time.perf_counter()
    algo = None
    try:
        algo = unirl.build(spec.algo, spec.algorithm_config())
        for _ in range(spec.iterations):
            result = algo.train()
            rec.results.append({k: v for k, v in result.items() if k not in TIME_KEYS})
            rec.weights.append(algo.policy.get_flat_weights())
    except Exception as e:
        rec.error = f"{type(e).__name__}: {e}"
        if not isinstance(e, unirl.UnirlError):
            rec.error += "\n" + traceback.format_exc(limit=8)
    finally:
        if algo is not None:
            try:
                algo.stop()
            except Exception as e:
                rec.error = rec.error or f"stop() raised {type(e).__name__}: {e}"
    rec.duration_s = time.perf_counter() - t0
    return rec


@dataclass
class RunDifference:
    """Where a run first departs from its reference: iteration, array, first index and both values."""

    reference: str
    other: str
    iteration: int
    array: str
    index: tuple | None
    expected: object
    actual: object
    count: int
    size: int
    #: Every array that differs at that iteration (the first one is `array`).
    arrays: list = field(default_factory=list)

    def message(self) -> str:
        where = f" first at index {list(self.index)}" if self.index else ""
        also = [a for a in self.arrays if a != self.array]
        return (f"{self.other} differs from {self.reference} at iteration {self.iteration}: `{self.array}`"
                f"{where}: expected {self.expected!r}, got {self.actual!r} ({self.count} of {self.size} "
                f"elements differ)" + (f"; also differ there: {', '.join(also)}" if also else ""))

    def as_dict(self) -> dict:
        return {"reference": self.reference, "other": self.other, "iteration": self.iteration,
                "array": self.array, "index": list(self.index) if self.index else self.index,
                "expected": self.expected, "actual": self.actual, "count": self.count, "size": self.size,
                "arrays": self.arrays}


def _as_array(value) -> np.ndarray:
    return np.asarray(value if value is not None else np.nan)


def compare_runs(reference: RunRecord, other: RunRecord) -> RunDifference | None:
    """None if `other` equals `reference` bit for bit (metrics and weights, every iteration), else the first difference."""
    from unirl.conformance.framework_checks import compare_arrays

    ref_label, other_label = reference.spec.label, other.spec.label
    if reference.spec.label == other.spec.label:
        ref_label, other_label = f"{ref_label} (run 1)", f"{other_label} (run 2)"
    for i, (ra, rb, wa, wb) in enumerate(zip(reference.results, other.results, reference.weights, other.weights),
                                         start=1):
        findings = []
        for key in sorted(set(ra) | set(rb)):
            if key not in ra or key not in rb:
                missing_in = other_label if key not in rb else ref_label
                findings.append((key, None, ra.get(key), rb.get(key), 1, 1, f"missing in {missing_in}"))
                continue
            f = compare_arrays(f"metric {key}", _as_array(ra[key]), _as_array(rb[key]), check="bitwise")
            if not f.ok:
                findings.append((f"metric {key}", f.first_index, f.expected, f.actual,
                                 _count(f), int(np.asarray(ra[key]).size) or 1, f.message))
        f = compare_arrays("weights", wa, wb, check="bitwise")
        if not f.ok:
            findings.append(("weights", f.first_index, f.expected, f.actual, _count(f), int(wa.size), f.message))
        if findings:
            name, index, expected, actual, count, size, _ = findings[0]
            return RunDifference(ref_label, other_label, i, name, index, _plain(expected), _plain(actual),
                                 count, size, [x[0] for x in findings])
    if len(reference.results) != len(other.results):
        n = min(len(reference.results), len(other.results))
        return RunDifference(ref_label, other_label, n + 1, "iterations", None, len(reference.results),
                             len(other.results), 1, 1, ["iterations"])
    return None


def _count(finding) -> int:
    """How many elements differ, from a Finding's message ("K of N elements differ")."""
    try:
        return int(finding.message.split(" of ")[0])
    except (ValueError, AttributeError):
        return 1


def _plain(v):
    """A JSON-friendly scalar or list (NumPy scalars become Python numbers; floats keep every bit via repr)."""
    if isinstance(v, np.generic):
        return v.item()
    return v
