"""Level 1 (API): runs the framework checks (framework_checks) and backend checks (backend_checks) and turns
their findings into the suite's records, one per (check, framework or backend)."""
from __future__ import annotations

import time
import traceback

from unirl.conformance.report import FAILED, PASSED, SKIPPED


def _record(check: str, framework, backend, status: str, duration_s: float, message: str = "",
            difference=None) -> dict:
    return dict(level=1, check=check, algo=None, framework=framework, backend=backend, status=status,
                duration_s=duration_s, message=message, difference=difference)


def findings_record(check: str, findings, framework=None, backend=None, duration_s: float = 0.0) -> dict:
    """One record from a list of framework_checks.Finding: failed with the first bad finding's details."""
    bad = [f for f in findings if not f.ok]
    if not bad:
        return _record(check, framework, backend, PASSED, duration_s, f"{len(findings)} comparisons agree")
    first = bad[0]
    message = str(first) + (f"; {len(bad) - 1} more finding(s) failed: "
                            + ", ".join(f.array for f in bad[1:6]) if len(bad) > 1 else "")
    return _record(check, framework, backend, FAILED, duration_s, message,
                   {"findings": [f.as_dict() for f in bad[:10]], "failed": len(bad), "total": len(findings)})


def _run(check: str, fn, framework=None, backend=None) -> dict:
    t0 = time.perf_counter()
    try:
        findings = fn()
    except Exception as e:
        return _record(check, framework, backend, FAILED, time.perf_counter() - t0,
                       f"raised {type(e).__name__}: {e}", {"traceback": traceback.format_exc(limit=8)})
    return findings_record(check, findings, framework, backend, time.perf_counter() - t0)


def framework_api_checks(framework: str) -> list[dict]:
    """Ops against NumPy (conv2d among them), value_and_grad against a hand-derived gradient, the action
    distributions (Categorical, DiagGaussian, MultiCategorical) against NumPy and finite differences, row
    invariance of an MLP, of a CNN and of a recurrent module, the optimizer step."""
    from unirl.conformance import framework_checks as fc

    adapter = fc.load_adapter(framework)
    checks = [
        ("api/framework/ops_vs_numpy", lambda: fc.check_ops_against_numpy(adapter)),
        ("api/framework/value_and_grad", lambda: fc.check_value_and_grad(adapter)),
        ("api/framework/distributions", lambda: fc.check_distributions(adapter)),
        ("api/framework/row_invariance", lambda: fc.check_row_invariance(adapter)),
        ("api/framework/row_invariance_cnn", lambda: fc.check_row_invariance_cnn(adapter)),
        ("api/framework/row_invariance_recurrent", lambda: fc.check_row_invariance_recurrent(adapter)),
        ("api/framework/optimizer_step", lambda: fc.check_optimizer_step(adapter)),
    ]
    return [_run(name, fn, framework=framework) for name, fn in checks]


def backend_api_checks(backend: str) -> list[dict]:
    """The backend protocol checks of backend_checks (ordering, wait-first-k, errors with traceback, a killed
    worker, 100 MB bit-exact, a >1M-element float32 array and the weights to and from every worker bit-exact, log
    forwarding, clean shutdown), one record each."""
    from unirl.conformance import backend_checks as bc

    return [backend_check_record(r, backend) for r in bc.run_backend_checks(bc.backend_factory(backend))]


def backend_check_record(result, backend: str) -> dict:
    """A suite record from a backend_checks.CheckResult; the message carries the first difference, if any."""
    data = dict(result.data)
    message = result.detail
    if "first_index" in data and "expected" in data:
        message += f" (first at index {data['first_index']}: expected {data['expected']}, got {data['actual']})"
    status = SKIPPED if result.skipped else (PASSED if result.ok else FAILED)
    return _record(f"api/backend/{result.check}", None, backend, status, result.seconds, message, data or None)
