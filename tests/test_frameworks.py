"""The framework adapters (torch, tf, jax): ops, gradients, optimizer, cross-framework agreement, traces, determinism."""
import importlib.util
import itertools
import json
import warnings

import numpy as np
import pytest

from unirl.conformance import framework_checks as fc
from conftest import TINY_PPO, run_cli

FRAMEWORKS = [f for f, mod in (("torch", "torch"), ("tf", "tensorflow"), ("jax", "jax"))
              if importlib.util.find_spec(mod) is not None]
COMPILED = [f for f in FRAMEWORKS if f != "torch"]


def _assert_no_failures(findings):
    bad = fc.failures(findings)
    assert not bad, "\n".join(str(f) for f in bad)


@pytest.fixture(scope="module")
def adapters():
    return {f: fc.load_adapter(f) for f in FRAMEWORKS}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ops_match_numpy(adapters, framework):
    findings = fc.check_ops_against_numpy(adapters[framework])
    assert {f.array.split("/")[0] for f in findings} >= set(fc.OPS_NAMES)  # every op was exercised
    _assert_no_failures(findings)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_value_and_grad_matches_hand_derived_gradient(adapters, framework):
    _assert_no_failures(fc.check_value_and_grad(adapters[framework]))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_compiled_adam_with_clipping_matches_numpy_reference(adapters, framework):
    _assert_no_failures(fc.check_optimizer_step(adapters[framework], steps=6))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_rows_output_does_not_depend_on_its_batch_size(adapters, framework):
    """Bitwise: acting on N envs per worker gives each env the numbers it gets in any other split."""
    _assert_no_failures(fc.check_row_invariance(adapters[framework],
                                                batch_sizes=(1, 2, 3, 5, 8, 11, 17, 32, 63, 64, 65, 100, 256)))


@pytest.fixture(scope="module")
def clipping_problem():
    """PPO's own captured learning call, with the behaviour log-probs moved so that some ratios
    clip and some do not: the agreement below then covers both branches of the surrogate."""
    import dataclasses

    problem = fc.default_problem("PPO")
    batch = dict(problem.batch)
    rng = np.random.default_rng(0)
    batch["action_logp"] = (batch["action_logp"] + rng.uniform(-0.5, 0.5, len(batch["action_logp"]))).astype(np.float32)
    return dataclasses.replace(problem, batch=batch)


@pytest.mark.parametrize("pair", list(itertools.combinations(FRAMEWORKS, 2)), ids="-".join)
def test_frameworks_agree_on_ppo_loss_gradient_and_step(adapters, clipping_problem, pair):
    """PPO's own batch and weights: loss, gradient and weights after one learn step agree to 1e-5
    (each array relative to its scale: a near-zero element's own relative error is large by nature)."""
    a, b = pair
    result = fc.compare_loss_and_grads(adapters[a], adapters[b], clipping_problem, rtol=1e-5)
    assert {"loss", "grad", "weights_after_step", "stats/kl", "stats/clip_fraction"} <= set(result)
    _assert_no_failures(result)
    # the same ratios were clipped: the fractions differ by less than one row (the mean itself may
    # round differently in each framework's reduction)
    rows = len(clipping_problem.batch["action_logp"])
    assert result["stats/clip_fraction"]["max_abs_diff"] < 0.5 / rows


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ppo_gradient_is_not_zero_and_some_ratios_clip(adapters, clipping_problem, framework):
    """The agreement above means something only if there is a gradient to agree on and the clip is exercised."""
    out = fc.loss_and_grads(adapters[framework], clipping_problem)
    grad = out["grad"]
    assert np.all(np.isfinite(grad)) and np.linalg.norm(grad) > 1e-3, np.linalg.norm(grad)
    assert np.count_nonzero(grad) > grad.size // 2  # not one layer's gradient only
    assert 0 < out["stats/clip_fraction"] < 1, out["stats/clip_fraction"]


@pytest.mark.parametrize("framework", COMPILED)
def test_ppo_traces_each_compiled_function_once(framework):
    """A decaying lr (a new value every iteration) and new minibatches never retrace the learn step."""
    counts = fc.count_traces(framework, iterations=4)
    # JAX runs each iteration's minibatches as one compiled loop (Policy.learn_epochs), never the single step
    loops = getattr(fc.load_adapter(framework), "compiled_loops", False)
    assert (counts.get("learn_step", 0), counts.get("learn_steps", 0)) == ((0, 1) if loops else (1, 0)), counts
    assert counts["forward"] == 1, counts  # the learner's batch varies with truncations: padded
    # The learner's policy acts only in the evaluation (the workers have their own policies).
    assert counts["policy_out"] == 1, counts
    # Acting reads the flat vector directly when the adapter allows it, so nothing unflattens it.
    flat_acting = getattr(fc.load_adapter(framework), "flat_params_for_acting", False)
    assert counts["unflatten"] == (0 if flat_acting else 1), counts


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_same_run_twice_gives_bit_identical_weights(framework):
    finding = fc.check_same_run_twice(framework, iterations=2)
    assert finding.ok, str(finding)


@pytest.mark.parametrize("framework", COMPILED)
def test_worker_count_does_not_change_a_single_weight(framework):
    """8 envs on 1, 2 or 4 workers: each worker acts on 8, 4 or 2 rows, and the run is the same."""
    findings = fc.check_worker_count_invariance(framework, worker_counts=(1, 2, 4), num_envs=8, iterations=2)
    _assert_no_failures(findings)


def test_bench_reports_every_framework_with_ratios_to_torch():
    from unirl.benchmarks.frameworks import bench_frameworks, print_framework_table
    from rich.console import Console

    records = bench_frameworks(COMPILED[:1] or ["torch"], rounds=1, epochs_per_round=2, calls_per_round=20)
    by_name = {r["framework"]: r for r in records}
    assert list(by_name)[0] == "torch" and by_name["torch"]["reference"] == bool(COMPILED)
    torch_rate = by_name["torch"]["learner_samples_per_s"]
    for r in records:
        assert r["train_batch_size"] == 256 and r["minibatch_size"] == 128
        assert r["epochs_timed"] == 2 and r["act_calls_timed"] == 20
        # throughput is the batch over the median epoch time, and every ratio is to torch's number
        assert r["learner_samples_per_s"] == pytest.approx(256 / (r["learner_epoch_ms"] / 1e3))
        assert r["learner_vs_torch"] == pytest.approx(r["learner_samples_per_s"] / torch_rate)
        assert r["act_64_vs_torch"] == pytest.approx(r["act_64_us"] / by_name["torch"]["act_64_us"])
        assert 0 < r["act_1_us"] < 1e6 and 0 < r["act_64_us"] < 1e6
        if r["framework"] != "torch":
            assert r["trace_counts"].get("learn_step", 0) + r["trace_counts"].get("learn_steps", 0) == 1, r["trace_counts"]
    console = Console(record=True, width=120)
    print_framework_table(records, console)
    assert "samples/s" in console.export_text()


@pytest.mark.parametrize("framework", COMPILED)
def test_torch_checkpoint_acts_the_same_in_other_frameworks(tmp_path, framework):
    pytest.importorskip("torch")
    config = dict(TINY_PPO, num_epochs=4)  # weights far enough from init that actions are not near ties
    finding = fc.check_checkpoint_transfer("torch", framework, str(tmp_path / "ck"), iterations=4,
                                           num_obs=1000, config=config)
    assert finding.ok, str(finding)
    assert finding.details["logits"]["ok"], finding.details["logits"]


@pytest.mark.skipif("jax" not in FRAMEWORKS or "torch" not in FRAMEWORKS, reason="needs torch and jax")
def test_cli_evaluates_a_torch_checkpoint_with_jax(tmp_path):
    import unirl

    algo = unirl.build("PPO", dict(TINY_PPO, framework="torch"))
    try:
        for _ in range(3):
            algo.train()
        ckpt = algo.save(str(tmp_path / "ck"))
    finally:
        algo.stop()
    returns = {}
    for framework in ("torch", "jax"):
        out = tmp_path / f"{framework}.json"
        proc = run_cli("evaluate", ckpt, "--framework", framework, "--episodes", "4", "--json", str(out), timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"with {framework}" in proc.stdout
        assert "Warning" not in proc.stderr, proc.stderr
        returns[framework] = json.loads(out.read_text())["episode_returns"]
    assert returns["jax"] == returns["torch"]


@pytest.mark.skipif("jax" not in FRAMEWORKS, reason="needs jax")
def test_jax_takes_int64_actions_without_warnings():
    import unirl

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        algo = unirl.build("PPO", dict(TINY_PPO, framework="jax"))
        try:
            result = algo.train()
        finally:
            algo.stop()
    assert np.isfinite(result["learner/total_loss"])


def test_an_adapter_given_by_import_path_is_checked_like_a_builtin():
    framework = COMPILED[0] if COMPILED else "torch"
    path = f"unirl.frameworks.{framework}:Adapter"
    adapter = fc.load_adapter(path)
    assert fc.framework_spec(adapter) == framework
    _assert_no_failures(fc.check_ops_against_numpy(path))
    # an adapter class outside unirl.frameworks is named by its import path in configs
    third_party = type("Adapter", (type(adapter),), {"__module__": "mypkg.adapters"})
    assert fc.framework_spec(object.__new__(third_party)) == "mypkg.adapters:Adapter"


def test_compare_arrays_names_the_first_difference():
    f = fc.compare_arrays("w", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 3.5]), rtol=1e-3)
    assert not f.ok and f.first_index == (1,) and f.expected == 2.0 and f.actual == 2.5
    assert f.max_abs_diff == 0.5 and f.max_rel_diff == pytest.approx(0.2)
    assert fc.compare_arrays("w", np.zeros(3), np.zeros(3)).ok
    assert not fc.compare_arrays("w", np.zeros(3), np.zeros(4)).ok
