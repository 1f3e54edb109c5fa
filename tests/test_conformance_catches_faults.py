"""The conformance suite catches deliberately broken plugins (tests/broken_plugins.py) at the right level,
with a message that names the check, the array, the iteration, the first differing index and both values."""
import json

import numpy as np
import pytest

import broken_plugins
from unirl.conformance.report import FAILED, PASSED
from unirl.conformance.runner import SuiteOptions, run_suite

ARRIVAL = "broken_plugins:ArrivalOrderBackend"
CORRUPT = "broken_plugins:CorruptLastElementBackend"
SCALED = "broken_plugins:ScaledGradTorchAdapter"
THIRD = "broken_plugins:CorruptThirdWorkerBackend"
ROUND = "broken_plugins:RoundBigFloat32Backend"


def records(report, level=None, check=None, status=None):
    return [r for r in report.results if (level is None or r.level == level)
            and (check is None or r.check.startswith(check)) and (status is None or r.status == status)]


@pytest.fixture(scope="module")
def corrupt_report():
    return run_suite(SuiteOptions(algos=["PPO"], frameworks=["torch"], backends=[CORRUPT], quick=True,
                                  levels=(1, 2, 3)))


def test_corrupted_last_element_is_caught_at_level_3_with_iteration_array_index_and_values(corrupt_report):
    (l2,) = records(corrupt_report, level=2)
    assert l2.status == PASSED, l2.message  # the corruption is deterministic: the same run twice agrees
    l3s = records(corrupt_report, level=3)
    assert sorted(r.num_workers for r in l3s) == [1, 2, 3, 4] and all(r.status == FAILED for r in l3s)
    (l3,) = [r for r in l3s if r.num_workers == 2]
    assert l3.backend == CORRUPT and l3.framework == "torch"
    assert f"PPO/torch/{CORRUPT} with 2 workers differs from PPO/torch/local with 1 worker at iteration 1" in l3.message
    d = l3.difference
    assert d["iteration"] == 1 and d["expected"] != d["actual"]
    # the corrupted sample changed the learned weights and the optimizer state
    assert any(a.startswith("array params/") for a in d["arrays"]) and "array opt/1/mu" in d["arrays"]
    assert f"expected {d['expected']!r}, got {d['actual']!r}" in l3.message


def test_corrupted_last_element_is_caught_at_level_1_by_the_big_array_check(corrupt_report):
    (rt,) = records(corrupt_report, level=1, check="api/backend/array_roundtrip")
    assert rt.status == FAILED and rt.backend == CORRUPT
    assert rt.message.startswith("the 100 MB array came back different (first at index ")
    n = 100 * (1 << 20) // 8
    assert rt.difference["first_index"] == n - 1  # the last element, and only it
    assert rt.difference["expected"] != rt.difference["actual"]
    (every,) = records(corrupt_report, level=1, check="api/backend/float32_every_worker")
    assert every.status == FAILED and every.difference["direction"] == "worker -> driver"
    assert every.difference["first_index"] == every.difference["elements"] - 1
    others = [r for r in records(corrupt_report, level=1, check="api/backend") if r not in (rt, every)]
    assert all(r.status != FAILED for r in others), [r.line() for r in others]


def test_arrival_order_backend_is_caught_at_level_1_by_the_ordering_check():
    report = run_suite(SuiteOptions(algos=["PPO"], frameworks=["torch"], backends=[ARRIVAL], quick=True, levels=(1,)))
    (order,) = records(report, level=1, check="api/backend/ordering")
    assert order.status == FAILED and order.backend == ARRIVAL
    # the slow first task was asked first but arrived last
    assert order.message.startswith("values differ from the order asked (first at index 0: expected 'slow', got ")
    assert order.difference["first_index"] == 0


@pytest.fixture(scope="module")
def scaled_report():
    return run_suite(SuiteOptions(algos=["PPO"], frameworks=[SCALED], backends=["local"], quick=True,
                                  levels=(1, 2, 3, 4)))


def test_scaled_gradient_is_caught_at_level_4_with_the_factor(scaled_report):
    (grads,) = records(scaled_report, level=4, check="loss_and_gradients")
    assert grads.status == FAILED and grads.framework == SCALED
    assert grads.message.startswith(f"`grad` of {SCALED} differs from torch beyond the tolerance 1e-05")
    d = grads.difference
    assert d["array"] == "grad" and d["reference"] == "torch"
    # the difference found is the injected factor
    assert d["actual"] / d["expected"] == pytest.approx(broken_plugins.GRADIENT_FACTOR, rel=1e-5)
    assert d["arrays"]["grad"]["scale_rel_diff"] == pytest.approx(broken_plugins.GRADIENT_FACTOR - 1, rel=1e-2)
    assert d["arrays"]["loss"]["ok"]  # the loss itself is right; only its gradient is off


def test_scaled_gradient_is_caught_at_level_1_by_the_hand_derived_gradient(scaled_report):
    (vg,) = records(scaled_report, level=1, check="api/framework/value_and_grad")
    assert vg.status == FAILED
    assert "value_and_grad: grad" in vg.message
    finding = vg.difference["findings"][0]
    assert finding["actual"] / finding["expected"] == pytest.approx(broken_plugins.GRADIENT_FACTOR, rel=1e-5)
    (ops,) = records(scaled_report, level=1, check="api/framework/ops_vs_numpy")
    assert ops.status == PASSED  # the forward ops are fine


def test_scaled_gradient_adapter_is_still_repeatable_and_worker_count_invariant(scaled_report):
    for r in records(scaled_report, level=2) + records(scaled_report, level=3):
        assert r.status == PASSED, r.line()
    assert sorted(r.num_workers for r in records(scaled_report, level=3)) == [2, 3, 4]  # against 1 worker


def test_a_correct_backend_passed_by_import_path_passes(tmp_path):
    report = run_suite(SuiteOptions(algos=["PPO"], frameworks=["torch"], backends=["unirl.backends.local:Backend"],
                                    quick=True, levels=(2, 3)))
    assert not report.failed, [r.line() for r in report.failed]
    assert [r.status for r in records(report, level=3)] == [PASSED] * 4  # 1, 2, 3 and 4 workers


def test_a_fault_at_the_third_worker_only_is_caught_in_the_quick_mode():
    """Worker 2's results come back with one ulp changed: runs with 1 or 2 workers never see it."""
    report = run_suite(SuiteOptions(algos=["PPO"], frameworks=["torch"], backends=[THIRD], quick=True,
                                    levels=(1, 2, 3)))
    by_count = {r.num_workers: r for r in records(report, level=3)}
    assert sorted(by_count) == [1, 2, 3, 4]
    assert by_count[1].status == PASSED and by_count[2].status == PASSED
    assert by_count[3].status == FAILED and by_count[4].status == FAILED
    assert f"PPO/torch/{THIRD} with 3 workers differs from PPO/torch/local with 1 worker at iteration 1" \
        in by_count[3].message
    (l2,) = records(report, level=2)
    assert l2.status == PASSED  # the 2-worker pair is repeatable (and clean)
    # level 1 catches it too: the transfer check talks to 4 workers and names the third
    (every,) = records(report, level=1, check="api/backend/float32_every_worker")
    assert every.status == FAILED and every.difference["worker"] == 2
    assert "(worker 2 of 4) is not bit-exact" in every.message


def test_a_backend_that_rounds_big_float32_arrays_is_caught_at_level_1():
    """float32 arrays above a million elements travel at float16 precision: PPO's 9,155 weights never notice,
    so levels 2 and 3 pass; level 1's transfer of a >1M-element float32 array to every worker does not."""
    report = run_suite(SuiteOptions(algos=["PPO"], frameworks=["torch"], backends=[ROUND], quick=True,
                                    levels=(1, 2, 3)))
    (every,) = records(report, level=1, check="api/backend/float32_every_worker")
    assert every.status == FAILED
    d = every.difference
    assert (d["direction"], d["worker"], d["array"]) == ("driver -> worker", 0, "special_float32")
    assert d["elements"] > 1_000_000 and d["expected"] != d["actual"]
    assert every.message.startswith("the 1,052,675-element float32 array `special_float32`: driver -> worker "
                                    "(worker 0 of 4) is not bit-exact (first at index ")
    (rt,) = records(report, level=1, check="api/backend/array_roundtrip")
    assert rt.status == PASSED  # the 100 MB float64 array is untouched
    assert all(r.status == PASSED for r in records(report, level=2) + records(report, level=3))


def test_an_unloadable_plugin_fails_with_the_reason():
    report = run_suite(SuiteOptions(algos=["PPO"], frameworks=["torch"], backends=["broken_plugins:NoSuchBackend"],
                                    quick=True, levels=(1, 2, 3)))
    (load,) = records(report, level=1, check="api/backend/load")
    assert load.status == FAILED and "cannot load backend `broken_plugins:NoSuchBackend`" in load.message


def test_json_report_has_one_record_per_check_and_combination(scaled_report, tmp_path):
    path = tmp_path / "report.json"
    scaled_report.write_json(str(path))
    data = json.loads(path.read_text())
    assert data["passed"] is False
    keys = [(r["level"], r["check"], r["combination"]) for r in data["records"]]
    assert len(keys) == len(set(keys))
    for r in data["records"]:
        assert r["status"] in ("passed", "failed", "unavailable", "skipped")
        assert isinstance(r["duration_s"], float) and "difference" in r
    (grads,) = [r for r in data["records"] if r["check"] == "loss_and_gradients"]
    assert grads["status"] == "failed" and grads["difference"]["array"] == "grad"
    assert np.isfinite(grads["difference"]["arrays"]["grad"]["scale_rel_diff"])
    row = next(m for m in data["matrix"] if m["framework"] == SCALED)
    assert row["level1"] == "FAIL" and row["level2"] == "pass" and row["level3"] == "pass" and row["level4"] == "FAIL"


def test_a_perturbed_arrival_schedule_fails_the_replay_level(monkeypatch):
    """REPLAYABLE algorithms: replaying a schedule that is not the one recorded (two results swapped)
    must fail level 3 — the replay level would be worthless if any order gave the same bits."""
    from unirl.conformance.runner import Suite

    recorded = Suite.schedule_for

    def swapped(self, spec):
        schedule = recorded(self, spec)
        if not schedule:
            return schedule
        schedule = list(schedule)
        i = next((k for k in range(len(schedule) - 1) if schedule[k] != schedule[k + 1]), None)
        if i is not None:
            schedule[i], schedule[i + 1] = schedule[i + 1], schedule[i]
        return schedule

    monkeypatch.setattr(Suite, "schedule_for", swapped)
    report = run_suite(SuiteOptions(algos=["A3C"], frameworks=["torch"], backends=["local"], quick=True, levels=(3,)))
    l3 = {r.num_workers: r for r in records(report, level=3)}
    assert l3[1].status == PASSED  # one worker: nothing to swap, the replay is the recording
    for n in (2, 3, 4):
        assert l3[n].status == FAILED, (n, l3[n].message)
        assert "differs from" in l3[n].message


@pytest.mark.timeout(300)
def test_sigterm_to_the_suite_leaves_no_child_job_behind():
    """`unirl conformance` stopped with SIGTERM while a child job records runs on another backend: the suite exits
    143 and the child job's session (it and the worker processes it started) is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    cmd = [sys.executable, "-c", "import sys; from unirl.cli import main; sys.exit(main(sys.argv[1:]))",
           "conformance", "--quick", "--algo", "PPO", "--framework", "torch", "--backend", "multiprocessing",
           "--levels", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        parent = psutil.Process(proc.pid)
        deadline, child = time.monotonic() + 120, None
        while child is None and time.monotonic() < deadline:
            child = next((p for p in parent.children(recursive=True) if "--run-specs" in " ".join(p.cmdline())), None)
            time.sleep(0.2)
        assert child is not None, "the suite started no child job"
        session = os.getsid(child.pid)
        time.sleep(3)  # let it start its workers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        time.sleep(1)
        left = [p.pid for p in psutil.process_iter(["pid"]) if _sid(p.pid) == session and _alive(p)]
        assert not left, left
    finally:
        if proc.poll() is None:
            proc.kill()


def _sid(pid):
    import os

    try:
        return os.getsid(pid)
    except OSError:
        return None


def _alive(p) -> bool:
    """Running (a zombie has ended: it only waits for a parent, here the container's init, to reap it)."""
    import psutil

    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
