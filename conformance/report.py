"""The suite's report: one record per (check, combination), the matrix built from them, and the JSON file."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

PASSED, FAILED, UNAVAILABLE, SKIPPED = "passed", "failed", "unavailable", "skipped"

LEVELS = {
    1: "API",
    2: "repeatable",
    3: "invariant",
    4: "frameworks",
    5: "learning",
}
#: The level's full name, for the JSON report and the docs.
LEVEL_TITLES = {
    1: "API: backends and framework adapters meet their protocols",
    2: "Repeatability: the same run twice is bit-identical",
    3: "Backend and worker-count invariance: bit-identical to local with one worker",
    4: "Framework agreement: loss and gradients within tolerance, equivalent learning curves",
    5: "Learning: the reference score within the step budget",
}


@dataclass
class CheckResult:
    """One check on one combination. `framework` or `backend` is None where the check does not depend on it."""

    level: int
    check: str
    algo: str | None
    framework: str | None
    backend: str | None
    status: str
    duration_s: float = 0.0
    message: str = ""
    #: What differed (array, iteration, first index, both values, ...), or measurements of a passing check.
    difference: dict | None = None
    num_workers: int | None = None

    @property
    def combination(self) -> str:
        parts = [p for p in (self.algo, self.framework, self.backend) if p]
        s = "/".join(parts) if parts else "-"
        if self.num_workers is not None:
            s += f" ({self.num_workers} worker{'s' if self.num_workers != 1 else ''})"
        return s

    def line(self) -> str:
        """One line for the console: status, level, check, combination and, unless passed, the message."""
        s = f"{self.status.upper():11s} L{self.level} {self.check:34s} {self.combination}"
        if self.status != PASSED and self.message:
            s += f": {self.message}"
        return s

    def as_dict(self) -> dict:
        d = asdict(self)
        d["level_name"] = LEVEL_TITLES[self.level]
        d["combination"] = self.combination
        d["difference"] = _jsonable(self.difference)
        return d


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.generic):
        return _jsonable(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)  # "nan", "inf": JSON has no literal for them
    return x


@dataclass
class Report:
    """Every check result of one suite run, and the rows (algorithm, framework, backend) of its matrix."""

    algos: list
    frameworks: list
    backends: list
    quick: bool
    reference_framework: str | None = None
    results: list = field(default_factory=list)
    duration_s: float = 0.0

    def add(self, result: CheckResult) -> CheckResult:
        self.results.append(result)
        return result

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAILED]

    def cell(self, algo: str, framework: str, backend: str, level: int) -> str:
        """The matrix cell: PASS, FAIL, n/a (unavailable), ref, or - (not run in this mode)."""
        if level == 4 and framework == self.reference_framework:
            return "ref"
        rs = [r for r in self.results if r.level == level and _applies(r, algo, framework, backend)]
        if any(r.status == FAILED for r in rs):
            return "FAIL"
        if any(r.status == PASSED for r in rs):
            return "pass" + ("*" if any(r.status == UNAVAILABLE for r in rs) else "")
        if any(r.status == UNAVAILABLE for r in rs):
            return "n/a"
        return "-"

    def rows(self) -> list[tuple]:
        return [(a, f, b) for a in self.algos for f in self.frameworks for b in self.backends]

    def unavailable_reasons(self) -> list[str]:
        seen = []
        for r in self.results:
            if r.status == UNAVAILABLE and r.message not in seen:
                seen.append(r.message)
        return seen

    def matrix_markdown(self) -> str:
        head = "| algorithm | framework | backend | " + " | ".join(f"L{k} {v}" for k, v in LEVELS.items()) + " |"
        lines = [head, "|" + "---|" * (3 + len(LEVELS))]
        for a, f, b in self.rows():
            lines.append(f"| {a} | {f} | {b} | " + " | ".join(self.cell(a, f, b, k) for k in LEVELS) + " |")
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "mode": "quick" if self.quick else "full",
            "algorithms": self.algos,
            "frameworks": self.frameworks,
            "backends": self.backends,
            "reference_framework": self.reference_framework,
            "duration_s": self.duration_s,
            "passed": not self.failed,
            "matrix": [{"algo": a, "framework": f, "backend": b,
                        **{f"level{k}": self.cell(a, f, b, k) for k in LEVELS}} for a, f, b in self.rows()],
            "records": [r.as_dict() for r in self.results],
        }

    def write_json(self, path: str) -> None:
        with open(path, "w") as fh:
            json.dump(self.to_json(), fh, indent=1)


def _applies(r: CheckResult, algo: str, framework: str, backend: str) -> bool:
    """Whether a result speaks for the row (algo, framework, backend): fields left None match any row."""
    return ((r.algo is None or r.algo == algo) and (r.framework is None or r.framework == framework)
            and (r.backend is None or r.backend == backend))
