"""The conformance suite's variant configs: PPO[pendulum] (continuous actions, the diagonal Gaussian) and
PPO[minatar] (uint8 image frames through the CNN) resolve as algorithms of their own and run bit-identically
across backends and worker counts; level 1's checks of the action distributions and of a CNN's row
invariance pass on torch and catch a broken adapter."""
import importlib.util

import pytest

import unirl
from unirl.conformance import framework_checks as fc
from unirl.conformance.runner import SuiteOptions, registered_algorithms, run_suite
from unirl.conformance.runs import RunSpec, compare_runs, record_run

VARIANTS = ["PPO[pendulum]", "PPO[lstm]", "PPO[spread]", "PPO[minatar]"]
needs_minatar = pytest.mark.skipif(importlib.util.find_spec("minatar") is None, reason="minatar not installed")


def test_variant_names_resolve_to_the_algorithm_with_the_variant_spec():
    ppo = unirl.get_algorithm_class("PPO")
    cls = unirl.get_algorithm_class("PPO[pendulum]")
    assert issubclass(cls, ppo) and cls.name == "PPO" and cls is unirl.get_algorithm_class("PPO[pendulum]")
    assert cls.conformance.run_config["env"] == "Pendulum-v1" and ppo.conformance.run_config["env"] == "CartPole-v1"
    assert unirl.get_algorithm_class("PPO[minatar]").conformance.run_config["env"] == "MinAtar/Breakout-v1"
    with pytest.raises(unirl.UnirlError, match=r"no conformance variant `nope` \(it has PPO\[pendulum\], PPO\[lstm\], PPO\[spread\], PPO\[minatar\]\)"):
        unirl.get_algorithm_class("PPO[nope]")
    names = registered_algorithms(variants=True)
    assert names[names.index("PPO") + 1:names.index("PPO") + 1 + len(VARIANTS)] == VARIANTS
    assert not set(VARIANTS) & set(registered_algorithms())  # opt-in: the default suite is unchanged


def test_cli_variants_option():
    import argparse

    from unirl.conformance.cli import add_arguments, options_from_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert options_from_args(p.parse_args(["--algo", "PPO", "--variants"])).algos == ["PPO"] + VARIANTS
    assert options_from_args(p.parse_args(["--algo", "PPO[minatar]"])).algos == ["PPO[minatar]"]
    assert set(VARIANTS) <= set(options_from_args(p.parse_args(["--variants"])).algos)


@pytest.mark.timeout(300)
def test_distribution_checks_pass_on_torch_and_catch_scaled_gradients():
    from broken_plugins import ScaledGradTorchAdapter

    findings = fc.check_distributions("torch")
    assert all(f.ok for f in findings), [str(f) for f in findings if not f.ok]
    assert {f.array.split("/")[0] for f in findings} == {"categorical", "diag_gaussian", "multi_categorical"}
    bad = [f for f in fc.check_distributions(ScaledGradTorchAdapter()) if not f.ok]
    assert sorted(f.array for f in bad) == ["categorical/grad", "diag_gaussian/grad", "multi_categorical/grad"]


@pytest.mark.timeout(300)
def test_cnn_row_invariance_on_torch():
    findings = fc.check_row_invariance_cnn("torch")
    assert all(f.ok for f in findings), [str(f) for f in findings if not f.ok]
    assert {"policy_outputs", "forward/outputs", "forward/values"} <= {f.array.split("[")[0] for f in findings}


@pytest.mark.timeout(300)
def test_recurrent_row_invariance_on_torch():
    findings = fc.check_row_invariance_recurrent("torch")
    assert all(f.ok for f in findings), [str(f) for f in findings if not f.ok]
    assert {"step/dist_inputs", "step/state", "sequences/values"} <= {f.array.split("[")[0] for f in findings}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("variant, iterations, others", [
    pytest.param("PPO[lstm]", 3, (("local", 4), ("multiprocessing", 3)), id="recurrent"),
    pytest.param("PPO[minatar]", 2, (("local", 3), ("multiprocessing", 2)), id="image", marks=needs_minatar),
])
def test_variant_config_bit_identical_across_backends_and_worker_counts(variant, iterations, others):
    cfg = unirl.get_algorithm_class(variant).conformance.run_config
    ref = record_run(RunSpec.make(variant, "torch", "local", 1, iterations, cfg))
    assert ref.error is None, ref.error
    for backend, n in others:
        other = record_run(RunSpec.make(variant, "torch", backend, n, iterations, cfg))
        diff = compare_runs(ref, other)
        assert diff is None, diff.message()


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_variants_pass_the_quick_suite_on_every_backend_and_framework():
    """Levels 1-4 for both variants on torch, tf and jax and every installed backend (tens of minutes)."""
    report = run_suite(SuiteOptions(algos=VARIANTS, quick=True))
    assert not report.failed, [r.line() for r in report.failed]
    passed = {(r.algo, r.level) for r in report.results if r.status == "passed"}
    assert {(a, level) for a in VARIANTS for level in (2, 3, 4)} <= passed
