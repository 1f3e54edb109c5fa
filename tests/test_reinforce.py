"""A tiny algorithm on the public API only (tests/reinforce_plugin.py: REINFORCE) passes the conformance suite's
quick mode, levels 1-4, on every backend (torch and jax; tf too under `slow`), as any third-party algorithm would."""
import numpy as np
import pytest

import reinforce_plugin
from conftest import MPI_MISSING
from unirl.conformance.report import FAILED, PASSED, SKIPPED, UNAVAILABLE
from unirl.conformance.runner import ALL_BACKENDS, ALL_FRAMEWORKS, SuiteOptions, run_suite

ALGO = "reinforce_plugin:REINFORCE"


def test_returns_to_go_reset_at_episode_ends():
    rewards = np.ones((4, 2), np.float32)
    dones = np.array([[0, 0], [1, 0], [0, 0], [0, 1]], bool)
    got = reinforce_plugin.returns_to_go(rewards, dones, 0.5)
    np.testing.assert_allclose(got[:, 0], [1.5, 1.0, 1.5, 1.0])
    np.testing.assert_allclose(got[:, 1], [1.875, 1.75, 1.5, 1.0])


def test_loss_is_minus_mean_logp_times_returns_on_every_framework():
    from unirl.conformance import framework_checks as fc

    problem = fc.capture_problem(ALGO, framework="torch", call=0)
    assert problem.kind == "learn" and set(problem.batch) == {"obs", "actions", "returns"}
    policy = fc.build_learner_policy("torch", problem)
    logits = policy.forward(problem.batch["obs"])["dist_inputs"].astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.mean(logp[np.arange(len(logp)), problem.batch["actions"]] * problem.batch["returns"])
    for framework in [f for f in ALL_FRAMEWORKS if fc.load_adapter(f) is not None]:
        out = fc.loss_and_grads(framework, problem)
        assert out["loss"] == pytest.approx(want, rel=1e-5, abs=1e-6), framework
        assert np.linalg.norm(out["grad"]) > 0


#: CI's slice: every backend, two frameworks (level 4 still compares jax's loss and gradients with torch's);
#: the whole matrix, tf included, is the slow test below.
CI_FRAMEWORKS = ("torch", "jax")


def _quick_mode(frameworks):
    return run_suite(SuiteOptions(algos=[ALGO], frameworks=list(frameworks), backends=list(ALL_BACKENDS),
                                  quick=True, levels=(2, 3, 4)))  # level 1 is algorithm-free: test_conformance runs it


def _check_passes(report, frameworks):
    assert not report.failed, "\n".join(r.line() for r in report.failed)
    mine = [r for r in report.results if r.algo == ALGO]
    for framework in frameworks:
        for backend in ALL_BACKENDS:
            l3 = [r for r in mine if r.level == 3 and (r.framework, r.backend) == (framework, backend)]
            if any(r.status == UNAVAILABLE for r in l3) or backend == "mpi" and MPI_MISSING:
                continue
            want = {2, 3, 4} if backend == "local" else {1, 2, 3, 4}
            assert {r.num_workers for r in l3 if r.status == PASSED} == want, (framework, backend)
            assert [r.status for r in mine if r.level == 2 and (r.framework, r.backend) == (framework, backend)] \
                == [PASSED]
    agree = [r for r in mine if r.level == 4 and r.check == "loss_and_gradients"]
    assert {r.framework for r in agree} >= set(frameworks) - {"torch"}, "level 4 compared every other framework"
    assert agree and all(r.status == PASSED for r in agree)
    # its spec leaves out level 5 (no reference score): reported as skipped, with the reason
    assert [r.status for r in mine if r.level == 5] == [SKIPPED]
    assert not [r for r in report.results if r.status == FAILED]


@pytest.mark.timeout(900)
def test_reinforce_plugin_passes_the_quick_mode_on_every_backend():
    _check_passes(_quick_mode(CI_FRAMEWORKS), CI_FRAMEWORKS)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_reinforce_plugin_passes_the_quick_mode_on_every_framework_and_backend():
    _check_passes(_quick_mode(ALL_FRAMEWORKS), ALL_FRAMEWORKS)
