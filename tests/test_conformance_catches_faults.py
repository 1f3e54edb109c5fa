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


def records(report, level=None, check=None, status=None):
    return [r for r in report.results if (level is None or r.level == level)
            and (check is None or r.check.startswith(check)) and (status is None or r.status == status)]


@pytest.fixture(scope="module")
def corrupt_report():
    return run_suite(SuiteOptions(frameworks=["torch"], backends=[CORRUPT], quick=True, levels=(1, 2, 3)))


def test_corrupted_last_element_is_caught_at_level_3_with_iteration_array_index_and_values(corrupt_report):
    (l2,) = records(corrupt_report, level=2)
    assert l2.status == PASSED, l2.message  # the corruption is deterministic: the same run twice agrees
    (l3,) = records(corrupt_report, level=3)
    assert l3.status == FAILED
    assert l3.backend == CORRUPT and l3.framework == "torch" and l3.num_workers == 2
    assert f"PPO/torch/{CORRUPT} with 2 workers differs from PPO/torch/local with 1 worker at iteration 1" in l3.message
    d = l3.difference
    assert d["iteration"] == 1 and d["expected"] != d["actual"]
    assert "weights" in d["arrays"]  # the corrupted sample changed the learned weights
    assert f"expected {d['expected']!r}, got {d['actual']!r}" in l3.message


def test_corrupted_last_element_is_caught_at_level_1_by_the_big_array_check(corrupt_report):
    (rt,) = records(corrupt_report, level=1, check="api/backend/array_roundtrip")
    assert rt.status == FAILED and rt.backend == CORRUPT
    assert rt.message.startswith("the 100 MB array came back different (first at index ")
    n = 100 * (1 << 20) // 8
    assert rt.difference["first_index"] == n - 1  # the last element, and only it
    assert rt.difference["expected"] != rt.difference["actual"]
    others = [r for r in records(corrupt_report, level=1, check="api/backend") if r is not rt]
    assert all(r.status != FAILED for r in others), [r.line() for r in others]


def test_arrival_order_backend_is_caught_at_level_1_by_the_ordering_check():
    report = run_suite(SuiteOptions(frameworks=["torch"], backends=[ARRIVAL], quick=True, levels=(1,)))
    (order,) = records(report, level=1, check="api/backend/ordering")
    assert order.status == FAILED and order.backend == ARRIVAL
    # the slow first task was asked first but arrived last
    assert order.message.startswith("values differ from the order asked (first at index 0: expected 'slow', got ")
    assert order.difference["first_index"] == 0


@pytest.fixture(scope="module")
def scaled_report():
    return run_suite(SuiteOptions(frameworks=[SCALED], backends=["local"], quick=True, levels=(1, 2, 3, 4)))


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
    assert len(records(scaled_report, level=3)) == 2  # 2 and 4 workers against 1


def test_a_correct_backend_passed_by_import_path_passes(tmp_path):
    report = run_suite(SuiteOptions(frameworks=["torch"], backends=["unirl.backends.local:Backend"], quick=True,
                                    levels=(2, 3)))
    assert not report.failed, [r.line() for r in report.failed]
    assert [r.status for r in records(report, level=3)] == [PASSED]


def test_an_unloadable_plugin_fails_with_the_reason():
    report = run_suite(SuiteOptions(frameworks=["torch"], backends=["broken_plugins:NoSuchBackend"], quick=True,
                                    levels=(1, 2, 3)))
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
