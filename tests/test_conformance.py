"""The conformance suite's quick mode under pytest: one `unirl conformance --quick --json` run, one test per
matrix cell (algorithm x framework x backend x level), plus the suite's own pieces (run comparison of all learner
state, the registry, the equivalence test).

QUICK_ALGOS are the algorithms checked here (each one's own test may run the suite for it, as
test_reinforce does for the REINFORCE plugin)."""
import json

import numpy as np
import pytest

from conftest import MPI_MISSING, run_cli
from unirl.conformance.runner import ALL_BACKENDS, ALL_FRAMEWORKS, QUICK
from unirl.conformance.runs import RunRecord, RunSpec, compare_runs
from unirl.conformance.stats import paired_tost

QUICK_LEVELS = (1, 2, 3, 4)
QUICK_ALGOS = ("PPO",)


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    path = tmp_path_factory.mktemp("conformance") / "report.json"
    proc = run_cli("conformance", "--quick", "--algo", ",".join(QUICK_ALGOS), "--json", str(path), timeout=880)
    assert path.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(path.read_text())


def _applies(record, algo, framework, backend, level):
    return (record["level"] == level and record["algo"] in (None, algo)
            and record["framework"] in (None, framework) and record["backend"] in (None, backend))


@pytest.mark.timeout(900)  # the first test to run also runs the quick mode (its fixture)
@pytest.mark.parametrize("level", QUICK_LEVELS)
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("algo", QUICK_ALGOS)
def test_quick_mode_cell_passes(quick_report, algo, framework, backend, level):
    if backend == "mpi" and MPI_MISSING:
        pytest.skip(f"MPI tests: {MPI_MISSING}")
    _, data = quick_report
    mine = [r for r in data["records"] if _applies(r, algo, framework, backend, level)]
    failed = [f"{r['check']} {r['combination']}: {r['message']}" for r in mine if r["status"] == "failed"]
    assert not failed, "\n".join(failed)
    (cell,) = [m[f"level{level}"] for m in data["matrix"]
               if (m["algo"], m["framework"], m["backend"]) == (algo, framework, backend)]
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
    assert [r["status"] for r in data["records"] if r["level"] == 5] == ["skipped"] * len(QUICK_ALGOS)
    print(f"quick mode: {data['duration_s']:.0f} s, {len(data['records'])} records")


@pytest.mark.timeout(900)
def test_quick_mode_sweeps_worker_counts_1_to_4_on_every_backend(quick_report):
    """A fault that shows only at the third (or fourth) worker must be met in the quick mode."""
    _, data = quick_report
    assert QUICK.worker_counts == (1, 2, 3, 4)
    for algo in QUICK_ALGOS:
        for backend in ALL_BACKENDS:
            mine = [r for r in data["records"] if r["level"] == 3 and r["algo"] == algo and r["backend"] == backend]
            if backend == "mpi" and MPI_MISSING or any(r["status"] == "unavailable" for r in mine):
                continue
            for framework in ALL_FRAMEWORKS:
                counts = {r["num_workers"] for r in mine if r["framework"] == framework and r["status"] == "passed"}
                assert counts == ({2, 3, 4} if backend == "local" else {1, 2, 3, 4}), (algo, backend, framework, counts)
        transfers = [r for r in data["records"] if r["check"] == "api/backend/float32_every_worker"]
        assert {r["backend"] for r in transfers if r["status"] == "passed"} >= {"local", "multiprocessing"}


def _record(weights, metrics, label_backend="local", workers=1, opt=None, states=None):
    spec = RunSpec.make("PPO", "torch", label_backend, workers, len(weights), {"total_envs": 12})
    arrays = [{"params/pi/w": np.asarray(w, np.float32), "opt/1/mu": np.asarray(o if o is not None else w, np.float32)}
              for w, o in zip(weights, opt or [None] * len(weights))]
    states = states or [{"iteration": i + 1, "learner_rng": {"state": {"state": 12345678901234567890123 + i}}}
                        for i in range(len(weights))]
    return RunRecord(spec, results=[dict(m) for m in metrics], arrays=arrays, states=states)


def test_compare_runs_names_iteration_array_index_and_values():
    w = [np.arange(5, dtype=np.float32), np.arange(5, dtype=np.float32) * 2]
    m = [{"episode_return_mean": 10.0, "learner/total_loss": 0.5},
         {"episode_return_mean": 11.0, "learner/total_loss": 0.4}]
    ref = _record(w, m)
    assert compare_runs(ref, _record(w, m, "multiprocessing", 2)) is None
    w2 = [w[0], w[1].copy()]
    w2[1][3] = np.nextafter(w2[1][3], np.inf)
    diff = compare_runs(ref, _record(w2, m, "multiprocessing", 2, opt=w))
    assert (diff.iteration, diff.array, diff.index, diff.count, diff.size) == (2, "array params/pi/w", (3,), 1, 5)
    assert diff.expected == 6.0 and diff.actual == float(np.nextafter(np.float32(6), np.float32(np.inf)))
    assert diff.message().startswith("PPO/torch/multiprocessing with 2 workers differs from PPO/torch/local with 1 "
                                     "worker at iteration 2: `array params/pi/w` first at index [3]: expected 6.0, got ")
    m2 = [m[0], dict(m[1], **{"learner/total_loss": 0.41})]
    diff = compare_runs(ref, _record(w, m2))
    assert diff.array == "metric learner/total_loss" and diff.iteration == 2 and "(run 2)" in diff.other


def test_compare_runs_checks_optimizer_state_and_the_json_learner_state():
    """Not only the weights: the optimizer state, the RNG state and the counters, every iteration."""
    w = [np.arange(5, dtype=np.float32)] * 2
    m = [{"x": 1.0}, {"x": 1.0}]
    ref = _record(w, m)
    mu = [w[0], w[1].copy()]
    mu[1][4] = np.nextafter(mu[1][4], np.inf)
    diff = compare_runs(ref, _record(w, m, opt=mu))
    assert (diff.iteration, diff.array, diff.index) == (2, "array opt/1/mu", (4,))
    states = [dict(s) for s in ref.states]
    states[0] = {"iteration": 1, "learner_rng": {"state": {"state": 12345678901234567890124}}}  # beyond float64
    diff = compare_runs(ref, _record(w, m, states=states))
    assert (diff.iteration, diff.array) == (1, "state learner_rng/state/state")
    assert diff.expected == 12345678901234567890123 and diff.actual == 12345678901234567890124
    states = [dict(s) for s in ref.states]
    states[1] = dict(states[1], arrival_schedule=[0, 1, 2])
    diff = compare_runs(ref, _record(w, m, states=states))
    assert diff.array == "state arrival_schedule" and diff.iteration == 2
    extra = _record(w, m)
    extra.arrays[0]["replay/obs"] = np.zeros(3, np.float32)  # a new array (a replay buffer) is compared too
    assert compare_runs(ref, extra).array == "array replay/obs"


def test_the_suite_takes_algorithms_from_the_registry_and_reads_their_spec():
    from unirl.conformance.runner import algo_unavailable, registered_algorithms
    from unirl.registry import ALGORITHMS, get_algorithm_class

    names = registered_algorithms()
    assert "PPO" in names and set(names) <= set(ALGORITHMS)
    assert all(get_algorithm_class(n).conformance is not None for n in names)
    assert algo_unavailable("PPO") is None
    assert "declares no conformance spec" in algo_unavailable("unirl.algorithm:Algorithm")
    assert "unknown algorithm" in algo_unavailable("NoSuchAlgo")


def test_an_algorithm_without_a_spec_is_reported_unavailable():
    from unirl.conformance.runner import SuiteOptions, run_suite

    report = run_suite(SuiteOptions(algos=["unirl.algorithm:Algorithm"], frameworks=["torch"], backends=["local"],
                                    quick=True, levels=(2, 3, 4)))
    assert not report.failed, [r.line() for r in report.failed]
    mine = [r for r in report.results if r.algo == "unirl.algorithm:Algorithm" and r.level in (2, 3)]
    assert mine and all(r.status == "unavailable" and "declares no conformance spec" in r.message for r in mine)


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
    report = run_suite(SuiteOptions(algos=["PPO"], frameworks=["torch"], backends=["doc_example_backend:MyBackend"],
                                    quick=True, levels=(1, 2, 3)))
    assert not report.failed, [r.line() for r in report.failed]
    checks = {r.check: r.status for r in report.results if r.backend == "doc_example_backend:MyBackend"}
    assert checks["api/backend/ordering"] == "passed" and checks["invariance"] == "passed"


def test_a_child_job_that_ran_other_unirl_code_is_named():
    """The suite compares its own code fingerprint with each child job's: another checkout (a cwd holding
    one) or a source edited mid-run makes every run of that child an error instead of a false verdict."""
    from conformance.launch import code_fingerprint, code_mismatch

    mine = code_fingerprint()
    assert "unirl.errors" in mine
    assert code_mismatch(mine, dict(mine)) is None
    name = "unirl.errors"
    edited = dict(mine, **{name: (mine[name][0], "0" * 64)})
    assert "source edited since this process imported it" in code_mismatch(mine, edited)
    moved = dict(mine, **{name: ("/elsewhere/unirl/errors.py", "0" * 64)})
    assert "/elsewhere/unirl/errors.py there" in code_mismatch(mine, moved)
