"""The conformance suite catches algorithms composed wrongly from unirl's parts (tests/broken_plugins.py): a worker
that learns against a stale target network (level 2, "worker updates"), a misspelt exploration option (every run
fails, with a suggestion) and a config key that nothing reads (level 1, "config keys")."""
import pytest

import broken_plugins
import unirl
from unirl.conformance.report import FAILED, PASSED, SKIPPED
from unirl.conformance.runner import SuiteOptions, run_suite
from unirl.conformance.runs import RunSpec, compare_runs, record_run

STALE = "broken_plugins:StaleTargetAsyncDQN"
MISSPELT = "broken_plugins:MisspeltExplorationDQN"
UNUSED = "broken_plugins:UnusedKeyPPO"
BACKENDS = ("local", "multiprocessing")


def records(report, algo, level=None, check=None, status=None):
    return [r for r in report.results if r.algo == algo and (level is None or r.level == level)
            and (check is None or r.check == check) and (status is None or r.status == status)]


def cell(report, algo, backend, level, framework="torch"):
    return report.cell(algo, framework, backend, level)


# -- level 2: worker updates ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def audit_report():
    # multiprocessing runs in the suite's child job; it imports broken_plugins through the PYTHONPATH the suite
    # passes on (this process's sys.path, where pytest put tests/), and so do its worker processes
    return run_suite(SuiteOptions(algos=[STALE, "ASYNC_DQN"], frameworks=["torch"], backends=list(BACKENDS),
                                  quick=True, levels=(2,)))


@pytest.mark.timeout(300)
def test_a_worker_that_keeps_its_first_target_network_fails_worker_updates_on_every_backend(audit_report):
    by_backend = {r.backend: r for r in records(audit_report, STALE, level=2, check="worker updates")}
    assert sorted(by_backend) == sorted(BACKENDS)
    for backend, r in by_backend.items():
        assert r.status == FAILED, r.line()
        assert (r.framework, r.num_workers) == ("torch", 2)
        assert "gradient" in r.message and "differs from the driver's recomputation" in r.message, r.message
        assert r.difference["audited"] > 0 and r.difference["num_findings"] >= 1
        assert cell(audit_report, STALE, backend, 2) == "FAIL"


@pytest.mark.timeout(300)
def test_async_dqn_passes_worker_updates_on_every_backend_with_every_update_audited(audit_report):
    spec = unirl.get_algorithm_class("ASYNC_DQN").conformance
    cfg = spec.run_config
    per_gradient = cfg["total_envs"] // 2 * cfg["rollout_fragment_length"]  # 2 workers
    by_backend = {r.backend: r for r in records(audit_report, "ASYNC_DQN", level=2, check="worker updates")}
    assert sorted(by_backend) == sorted(BACKENDS)
    for backend, r in by_backend.items():
        assert r.status == PASSED, r.line()
        assert r.difference["num_findings"] == 0
        assert r.difference["audited"] == spec.quick_iterations * cfg["train_batch_size"] // per_gradient
        assert cell(audit_report, "ASYNC_DQN", backend, 2) == "pass"
    # its spec leaves out the repeatability check; the worker-updates check runs regardless
    assert [r.status for r in records(audit_report, "ASYNC_DQN", level=2, check="repeatability")] == [SKIPPED]


@pytest.mark.timeout(120)
def test_the_stale_target_is_invisible_to_the_bitwise_levels_but_changes_the_learning():
    """Deterministic, so a replay reproduces it bit for bit (levels 2 and 3 cannot see it); wrong, so its weights
    part from Async DQN's on the same config once the target has been synced."""
    cfg = broken_plugins.StaleTargetAsyncDQN.conformance.run_config
    ref = record_run(RunSpec.make(STALE, "torch", "local", 2, 2, cfg))
    assert ref.error is None, ref.error
    replay = record_run(RunSpec.make(STALE, "torch", "local", 2, 2, cfg, replay=True), ref.schedule)
    assert compare_runs(ref, replay) is None
    right = record_run(RunSpec.make("ASYNC_DQN", "torch", "local", 2, 2, cfg))
    assert right.error is None, right.error
    assert right.results[-1]["weights_digest"] != ref.results[-1]["weights_digest"]


# -- a misspelt exploration option; a config key nothing reads --------------------------------------------------
@pytest.fixture(scope="module")
def plugins_report():
    return run_suite(SuiteOptions(algos=["PPO", UNUSED, MISSPELT], frameworks=["torch"], backends=["local"],
                                  quick=True, levels=(1, 2)))


@pytest.mark.timeout(300)
def test_a_misspelt_exploration_option_fails_its_runs_with_a_suggestion(plugins_report):
    mine = records(plugins_report, MISSPELT)
    assert not [r.line() for r in mine if r.status == PASSED]
    (l2,) = records(plugins_report, MISSPELT, level=2, check="repeatability")
    (keys,) = records(plugins_report, MISSPELT, level=1, check="config keys")
    for r in (l2, keys):
        assert r.status == FAILED, r.line()
        assert "unknown exploration option `epsilom`" in r.message and "Did you mean `epsilon`?" in r.message
    assert cell(plugins_report, MISSPELT, "local", 1) == "FAIL" and cell(plugins_report, MISSPELT, "local", 2) == "FAIL"


@pytest.mark.timeout(300)
def test_config_keys_passes_for_ppo_and_names_a_key_nothing_reads(plugins_report):
    (ppo,) = records(plugins_report, "PPO", level=1, check="config keys")
    assert ppo.status == PASSED, ppo.line()
    assert ppo.difference["flagged"] == [] and "evaluation_num_episodes" in ppo.difference["inert"]
    (bad,) = records(plugins_report, UNUSED, level=1, check="config keys")
    assert bad.status == FAILED
    assert bad.message.startswith("config keys never read and not declared inert: `mystery_coeff` ")
    assert bad.difference["flagged"] == ["mystery_coeff"]
    assert cell(plugins_report, UNUSED, "local", 1) == "FAIL"
    assert cell(plugins_report, UNUSED, "local", 2) == "pass"  # it runs, bit for bit: only level 1 sees it


def _config(algo):
    return RunSpec.make(algo, "torch", "local", 1, 2, unirl.get_algorithm_class(algo).conformance.run_config) \
        .algorithm_config()


@pytest.mark.timeout(120)
def test_a_key_declared_inert_passes_and_a_declared_key_that_does_not_exist_fails(monkeypatch):
    from unirl.conformance.config_keys import config_keys_check

    cls = broken_plugins.UnusedKeyPPO
    monkeypatch.setattr(cls, "inert_config_keys", {"mystery_coeff": "kept for old configs"}, raising=False)
    r = config_keys_check(UNUSED, _config(UNUSED))
    assert r["status"] == PASSED, r["message"]
    assert r["difference"]["inert"]["mystery_coeff"] == "kept for old configs"
    monkeypatch.setattr(cls, "inert_config_keys", {"mystery_coeff": "x", "mistery_coeff": "y"})
    r = config_keys_check(UNUSED, _config(UNUSED))
    assert r["status"] == FAILED and "inert_config_keys names keys its config does not have: `mistery_coeff`" \
        in r["message"]


@pytest.mark.timeout(120)
def test_a_base_key_is_inert_only_if_its_gate_was_read(monkeypatch):
    from unirl.conformance import config_keys

    monkeypatch.setitem(config_keys.INERT_BASE_KEYS, "evaluation_num_episodes", ("only with X", "mystery_coeff"))
    r = config_keys.config_keys_check(UNUSED, _config(UNUSED))
    assert r["difference"]["flagged"] == ["evaluation_num_episodes", "mystery_coeff"]


def test_the_recording_config_counts_reads_after_validation_and_not_to_dict_or_repr():
    from unirl.algorithms.ppo import PPOConfig
    from unirl.conformance.config_keys import recording_config_class

    rec = recording_config_class(PPOConfig)
    c = rec.from_dict({"env": "CartPole-v1", "clip_param": 0.1})
    assert rec.reads == set()  # from_dict's validation read them all
    c.to_dict(), repr(c), c == c
    assert rec.reads == set()
    assert c.clip_param == 0.1 and c.num_envs == c.num_workers * c.num_envs_per_worker
    assert rec.reads == {"clip_param", "num_workers", "num_envs_per_worker"}
    assert isinstance(c, PPOConfig) and c.to_dict() == PPOConfig.from_dict(c.to_dict()).to_dict()
