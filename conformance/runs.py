"""Recorded training runs (metrics and all learner state after every iteration) and their bit-for-bit comparison.

Levels 2 and 3 compare runs: a `RunSpec` names one (algorithm, framework, backend, worker count)
on a fixed config, `record_run` trains it and keeps, after every iteration, its result (time
fields and `num_worker_restarts` dropped), every array of `Algorithm.get_state()[0]` (all parameter sets, the optimizer
state, and whatever else the algorithm keeps there: replay buffers, filters, ...) and the
JSON-able learner state `get_state()[1]` (counters, RNG state, the arrival schedule; `config`
and `time_total_s` dropped), and `compare_runs` says where two records first differ: which
metric, array or state key, the first differing index and both values.

Asynchronous (REPLAYABLE) algorithms follow one convention: `get_state()[1]["arrival_schedule"]`
is the list of worker ids in the order the driver consumed their results, and the config key
`arrival_schedule` (that list) makes a run consume them in that order. `record_run` keeps the
schedule of the run's end (`RunRecord.schedule`); `record_run(spec, schedule=...)` replays one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

#: Result fields that measure wall time: never compared.
TIME_KEYS = frozenset({"time_this_iter_s", "time_total_s", "env_steps_per_s"})
#: Result fields that count the machine's faults, not the algorithm's numbers (a backend with worker recovery
#: reports its restarts; a recovered run promises the same bits): never compared either.
OPERATIONAL_KEYS = frozenset({"num_worker_restarts"})
UNCOMPARED_KEYS = TIME_KEYS | OPERATIONAL_KEYS
#: Learner-state keys never compared: the config (backend and worker count differ by design) and wall time.
IGNORED_STATE_KEYS = frozenset({"config", "time_total_s"})
#: The learner-state key (a list of worker ids) and config key of the replayable algorithms' arrival schedule.
SCHEDULE_KEY = "arrival_schedule"


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
    #: A REPLAYABLE algorithm's run that replays the arrival schedule recorded by the free-running reference run
    #: (local backend, the same worker count); the schedule itself is passed to record_run.
    replay: bool = False
    #: Level 2's "worker updates" run: > 0 sets the bound execution pattern's `audit` to this (AsyncGradients:
    #: every audit-th gradient is recomputed on the driver from the parameter sets it was sent); 0: a plain run.
    audit: int = 0

    @staticmethod
    def make(algo: str, framework: str, backend: str, num_workers: int, iterations: int, config: dict,
             repeat: int = 0, replay: bool = False, audit: int = 0) -> "RunSpec":
        import json

        return RunSpec(algo, framework, backend, num_workers, iterations,
                       tuple(sorted((k, json.dumps(v)) for k, v in config.items())), repeat, replay, audit)

    @property
    def label(self) -> str:
        n = self.num_workers
        return (f"{self.algo}/{self.framework}/{self.backend} with {n} worker{'s' if n != 1 else ''}"
                + (" (replaying the reference's schedule)" if self.replay else "")
                + (" (worker updates audited)" if self.audit else ""))

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
    """What a run produced, per iteration: its result (time fields dropped), every learner-state array
    (`get_state()[0]`) and the JSON-able learner state (`get_state()[1]` without IGNORED_STATE_KEYS)."""

    spec: RunSpec
    results: list = field(default_factory=list)
    arrays: list = field(default_factory=list)
    states: list = field(default_factory=list)
    duration_s: float = 0.0
    #: Why the run did not finish (an exception's message with the worker's traceback), or None.
    error: str | None = None
    #: The arrival schedule at the run's end (REPLAYABLE algorithms), or None.
    schedule: list | None = None
    #: An audited run's (spec.audit > 0) verdict: {"audited": updates recomputed on the driver, "findings": the
    #: pattern's audit findings (strings)}, or None.
    audit: dict | None = None

    @property
    def weights(self) -> list:
        """The trained parameters (`params/...` arrays, in state order) after every iteration, flattened."""
        return [np.concatenate([np.ravel(v) for k, v in a.items() if k.startswith("params/")] or [np.zeros(0)])
                for a in self.arrays]


def learner_state(algo) -> tuple[dict, dict]:
    """(arrays, JSON-able state) of an algorithm after an iteration: copies, ignored keys dropped."""
    arrays, state = algo.get_state()
    arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
    state = {k: v for k, v in state.items() if k not in IGNORED_STATE_KEYS}
    return arrays, _plain_tree(state)


def _plain_tree(x):
    if isinstance(x, dict):
        return {str(k): _plain_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain_tree(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain_tree(x.tolist())
    if isinstance(x, np.generic):
        return x.item()
    return x


def record_run(spec: RunSpec, schedule: list | None = None) -> RunRecord:
    """Build the algorithm, train `spec.iterations` iterations, keep results and all learner state; always stops it.

    With `schedule`, the run replays that arrival schedule (config key `arrival_schedule`).
    """
    import traceback

    import unirl

    rec = RunRecord(spec)
    t0 = time.perf_counter()
    algo = None
    try:
        config = spec.algorithm_config()
        if schedule is not None:
            config[SCHEDULE_KEY] = list(schedule)
        elif spec.replay:
            raise ValueError(f"{spec.label} replays a schedule, and none was given (the reference run failed?)")
        algo = unirl.build(spec.algo, config)
        if spec.audit:
            if not hasattr(algo.execution, "audit"):
                raise ValueError(f"{spec.label}: {type(algo).__name__}'s execution pattern has no `audit` mode")
            algo.execution.audit = spec.audit
            rec.audit = {"audited": 0, "findings": []}
        for _ in range(spec.iterations):
            result = algo.train()
            rec.results.append({k: v for k, v in result.items() if k not in UNCOMPARED_KEYS})
            arrays, state = learner_state(algo)
            rec.arrays.append(arrays)
            rec.states.append(state)
        if rec.states and rec.states[-1].get(SCHEDULE_KEY) is not None:
            rec.schedule = list(rec.states[-1][SCHEDULE_KEY])
    except Exception as e:
        rec.error = f"{type(e).__name__}: {e}"
        if not isinstance(e, unirl.UnirlError):
            rec.error += "\n" + traceback.format_exc(limit=8)
    finally:
        if rec.audit is not None:  # what was audited before an error too
            rec.audit = {"audited": int(algo.execution.audited), "findings": list(algo.execution.audit_findings)}
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
    """None if `other` equals `reference` bit for bit (every metric, every learner-state array and every
    JSON-able learner-state value, every iteration), else the first difference."""
    ref_label, other_label = reference.spec.label, other.spec.label
    if reference.spec.label == other.spec.label:
        ref_label, other_label = f"{ref_label} (run 1)", f"{other_label} (run 2)"
    n = min(len(reference.results), len(other.results))
    for i in range(n):
        findings = compare_iteration(reference, other, i, ref_label, other_label)
        if findings:
            name, index, expected, actual, count, size = findings[0]
            return RunDifference(ref_label, other_label, i + 1, name, index, _plain(expected), _plain(actual),
                                 count, size, [x[0] for x in findings])
    if len(reference.results) != len(other.results):
        return RunDifference(ref_label, other_label, n + 1, "iterations", None, len(reference.results),
                             len(other.results), 1, 1, ["iterations"])
    return None


def compare_iteration(reference: RunRecord, other: RunRecord, i: int, ref_label: str = "the reference",
                      other_label: str = "the run") -> list[tuple]:
    """Every difference after iteration i (0-based): (name, first index, expected, actual, count, size) each,
    metrics first, then learner-state arrays, then the JSON-able learner state."""
    findings: list[tuple] = []
    ra, rb = reference.results[i], other.results[i]
    for key in sorted(set(ra) | set(rb)):
        _compare_value(f"metric {key}", key in ra, key in rb, ra.get(key), rb.get(key), ref_label, other_label,
                       findings, as_array=True)
    aa = reference.arrays[i] if i < len(reference.arrays) else {}
    ab = other.arrays[i] if i < len(other.arrays) else {}
    for key in list(aa) + [k for k in ab if k not in aa]:
        _compare_value(f"array {key}", key in aa, key in ab, aa.get(key), ab.get(key), ref_label, other_label,
                       findings, as_array=True)
    sa = reference.states[i] if i < len(reference.states) else {}
    sb = other.states[i] if i < len(other.states) else {}
    _compare_tree("state", sa, sb, ref_label, other_label, findings)
    return findings


def _compare_value(name, in_a, in_b, a, b, ref_label, other_label, findings, as_array=False) -> None:
    from unirl.conformance.framework_checks import compare_arrays

    if not in_a or not in_b:
        findings.append((name, None, a, b, 1, 1))
        return
    if as_array or _numeric_list(a) and _numeric_list(b):
        ea, eb = _as_array(a), _as_array(b)
        if ea.dtype.kind not in "biuf" or eb.dtype.kind not in "biuf":  # strings (a digest), objects
            if not (ea.shape == eb.shape and ea.tolist() == eb.tolist()):
                findings.append((name, None, a, b, 1, 1))
            return
        f = compare_arrays(name, ea, eb, check="bitwise")
        if not f.ok:
            if f.first_index is None:  # a shape difference
                findings.append((name, None, f"shape {ea.shape}", f"shape {eb.shape}", 1, 1))
            else:
                findings.append((name, f.first_index, f.expected, f.actual, _count(f), int(ea.size) or 1))
        return
    if not _same(a, b):
        findings.append((name, None, a, b, 1, 1))


def _compare_tree(name, a, b, ref_label, other_label, findings) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            sub = f"{name} {k}" if name == "state" else f"{name}/{k}"
            if k not in a or k not in b:
                findings.append((sub, None, a.get(k), b.get(k), 1, 1))
            else:
                _compare_tree(sub, a[k], b[k], ref_label, other_label, findings)
        return
    if isinstance(a, list) and isinstance(b, list) and not (_numeric_list(a) and _numeric_list(b)):
        if len(a) != len(b):
            findings.append((name, None, f"{len(a)} entries", f"{len(b)} entries", 1, 1))
            return
        for k, (x, y) in enumerate(zip(a, b)):
            _compare_tree(f"{name}[{k}]", x, y, ref_label, other_label, findings)
        return
    _compare_value(name, True, True, a, b, ref_label, other_label, findings)


def _numeric_list(x) -> bool:
    """A list of floats, bools and ints small enough to be exact in float64."""
    return isinstance(x, list) and all(isinstance(v, (bool, float)) or isinstance(v, int) and abs(v) < 2 ** 53
                                       for v in x)


def _same(a, b) -> bool:
    """Exact equality of two JSON values of the same type; floats bit for bit (NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        return np.float64(a).tobytes() == np.float64(b).tobytes() or (a != a and b != b)
    return type(a) is type(b) and a == b


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
