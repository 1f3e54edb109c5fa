"""The conformance suite's quick mode under pytest: one `unirl conformance --quick --json` run, one test per
matrix cell (framework x backend x level), plus the suite's own pieces (run comparison, equivalence test)."""
import json

import numpy as np
import pytest

from conftest import MPI_MISSING, run_cli
from unirl.conformance.runner import ALL_BACKENDS, ALL_FRAMEWORKS
from unirl.conformance.runs import RunRecord, RunSpec, compare_runs
from unirl.conformance.stats import paired_tost

QUICK_LEVELS = (1, 2, 3, 4)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("conformance") / "report.json"
    proc = run_cli("conformance", "--quick", "--json", str(path), timeout=850)
    assert path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(path.read_text())


def _applies(record, framework, backend, level):
    return (record["level"] == level and record["algo"] in (None, "PPO")
            and record["framework"] in (None, framework) and record["backend"] in (None, backend))


@pytest.mark.timeout(900)  # the first test to run also runs the quick mode (its fixture)
@pytest.mark.parametrize("level", QUICK_LEVELS)
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_quick_mode_cell_passes(quick_report, framework, backend, level):
    if backend == "mpi" and MPI_MISSING:
        pytest.skip(f"MPI tests: {MPI_MISSING}")
    _, data = quick_report
    mine = [r for r in data["records"] if _applies(r, framework, backend, level)]
    failed = [f"{r['check']} {r['combination']}: {r['message']}" for r in mine if r["status"] == "failed"]
    assert not failed, "\n".join(failed)
    (cell,) = [m[f"level{level}"] for m in data["matrix"] if (m["framework"], m["backend"]) == (framework, backend)]
    if cell == "n/a":
        pytest.skip("unavailable here: " + "; ".join(sorted({r["message"] for r in mine if r["status"] == "unavailable"})))
    assert cell in ("pass", "pass*", "ref"), cell
    if cell != "ref":
        assert any(r["status"] == "passed" for r in mine)


@pytest.mark.timeout(900)
def test_quick_mode_exit_code_matrix_and_report(quick_report):
    proc, data = quick_report
    assert data["mode"] == "quick"
    assert proc.returncode == (0 if data["passed"] else 1), proc.stdout[-3000:]
    assert "L1 API" in proc.stdout and "L4 frameworks" in proc.stdout
    keys = [(r["level"], r["check"], r["combination"]) for r in data["records"]]
    assert len(keys) == len(set(keys)), "one record per (check, combination)"
    for r in data["records"]:
        assert {"status", "duration_s", "difference", "message", "level_name"} <= set(r)
    # level 5 is the full mode's: in the quick mode it is reported as skipped, not silently left out
    assert [r["status"] for r in data["records"] if r["level"] == 5] == ["skipped"]
    print(f"quick mode: {data['duration_s']:.0f} s")


def _record(weights, metrics, label_backend="local", workers=1):
    spec = RunSpec.make("PPO", "torch", label_backend, workers, len(weights), {"total_envs": 4})
    return RunRecord(spec, results=[dict(m) for m in metrics], weights=[np.asarray(w, np.float32) for w in weights])


def test_compare_runs_names_iteration_array_index_and_values():
    w = [np.arange(5, dtype=np.float32), np.arange(5, dtype=np.float32) * 2]
    m = [{"episode_return_mean": 10.0, "learner/total_loss": 0.5}, {"episode_return_mean": 11.0, "learner/total_loss": 0.4}]
    ref = _record(w, m)
    assert compare_runs(ref, _record(w, m, "multiprocessing", 2)) is None
    w2 = [w[0], w[1].copy()]
    w2[1][3] = np.nextafter(w2[1][3], np.inf)
    diff = compare_runs(ref, _record(w2, m, "multiprocessing", 2))
    assert (diff.iteration, diff.array, diff.index, diff.count, diff.size) == (2, "weights", (3,), 1, 5)
    assert diff.expected == 6.0 and diff.actual == float(np.nextafter(np.float32(6), np.float32(np.inf)))
    assert diff.message().startswith("PPO/torch/multiprocessing with 2 workers differs from PPO/torch/local with "
                                     "1 worker at iteration 2: `weights` first at index [3]: expected 6.0, got ")
    m2 = [m[0], dict(m[1], **{"learner/total_loss": 0.41})]
    diff = compare_runs(ref, _record(w, m2))
    assert diff.array == "metric learner/total_loss" and diff.iteration == 2 and "(run 2)" in diff.other


def test_paired_tost_accepts_small_differences_and_rejects_a_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(100, 20, 8)
    close = ref + rng.normal(0, 1, 8)
    t = paired_tost(ref, close, margin=10.0)
    assert t.equivalent and t.p_value < 0.05 and -10 < t.ci_low < t.ci_high < 10
    shifted = ref + 15 + rng.normal(0, 1, 8)
    t = paired_tost(ref, shifted, margin=10.0)
    assert not t.equivalent and t.ci_low > 10
    # identical curves (zero variance of the differences) are equivalent
    assert paired_tost(ref, ref, margin=1.0).equivalent


def test_the_example_backend_in_the_docs_passes_levels_1_to_3(tmp_path, monkeypatch):
    import pathlib
    import re

    from unirl.conformance.runner import SuiteOptions, run_suite

    docs = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "conformance.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", docs, re.S) if "class MyBackend" in b]
    (tmp_path / "doc_example_backend.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    report = run_suite(SuiteOptions(frameworks=["torch"], backends=["doc_example_backend:MyBackend"], quick=True,
                                    levels=(1, 2, 3)))
    assert not report.failed, [r.line() for r in report.failed]
    checks = {r.check: r.status for r in report.results if r.backend == "doc_example_backend:MyBackend"}
    assert checks["api/backend/ordering"] == "passed" and checks["invariance"] == "passed"
