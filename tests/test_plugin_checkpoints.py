"""Checkpoints of algorithms outside unirl's registry (tests/reinforce_plugin.py's REINFORCE) restore by the import
path of their class, which counts as code outside the registries: refused unless trusted. A conformance variant of a
registered algorithm (PPO[pendulum]) restores by its registered name, trusted."""
import json
import os
import sys

import pytest

import unirl
from conftest import REPO, run_cli
from unirl.registry import checkpoint_algorithm_class, get_algorithm_class

PLUGIN = "tests.reinforce_plugin:REINFORCE"
TINY = {"env": "CartPole-v1", "backend": "local", "num_envs_per_worker": 4, "train_batch_size": 64}
#: The CLI's subprocess imports `tests.reinforce_plugin` from the repository root.
PLUGIN_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)}
if REPO not in sys.path:
    sys.path.insert(0, REPO)  # so is this process (pytest run from elsewhere)


@pytest.fixture(scope="module")
def plugin_checkpoint(tmp_path_factory):
    """(checkpoint folder, weights digest) of two REINFORCE iterations."""
    algo = unirl.build(PLUGIN, TINY)
    try:
        algo.train()
        algo.train()
        path = algo.save(str(tmp_path_factory.mktemp("plugin") / "ck"))
        return path, algo.weights_digest()
    finally:
        algo.stop()


def test_plugin_checkpoint_names_its_class(plugin_checkpoint):
    state = json.load(open(os.path.join(plugin_checkpoint[0], "state.json")))
    assert state["algorithm"] == "REINFORCE" and state["algorithm_class"] == PLUGIN
    assert checkpoint_algorithm_class(state) is get_algorithm_class(PLUGIN)


def test_plugin_checkpoint_is_refused_unless_trusted_then_restores(plugin_checkpoint):
    path, digest = plugin_checkpoint
    with pytest.raises(unirl.UnirlError, match=f"refusing to load .*'{PLUGIN}'.*trust_checkpoint=True"):
        unirl.restore(path)
    algo = unirl.restore(path, trust_checkpoint=True)
    try:
        assert type(algo) is get_algorithm_class(PLUGIN)
        assert algo.weights_digest() == digest and algo.iteration == 2
    finally:
        algo.stop()


@pytest.mark.timeout(600)
def test_evaluate_cli_on_plugin_checkpoint_needs_trust(plugin_checkpoint, tmp_path):
    path = plugin_checkpoint[0]
    res = run_cli("evaluate", path, "--episodes", "2", timeout=300, env=PLUGIN_ENV)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unirl: error: refusing to load") and PLUGIN in lines[0], res.stderr
    out = tmp_path / "ev.json"
    res = run_cli("evaluate", path, "--episodes", "2", "--trust-checkpoint", "--json", str(out), timeout=300,
                  env=PLUGIN_ENV)
    assert res.returncode == 0, res.stderr
    algo = unirl.restore(path, trust_checkpoint=True)
    try:
        want = algo.evaluate(2)["evaluation/episode_returns"]
    finally:
        algo.stop()
    assert json.load(open(out))["episode_returns"] == want
    assert "mean return" in res.stdout


def test_a_registered_name_claimed_by_another_class_is_refused(tmp_path):
    algo = unirl.build("PPO", dict(TINY, minibatch_size=32, num_epochs=1))
    try:
        path = algo.save(str(tmp_path / "ck"))
    finally:
        algo.stop()
    state_file = tmp_path / "ck" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["algorithm_class"] == "unirl.algorithms.ppo:PPO"
    unirl.restore(path).stop()  # registered name and class: trusted
    state["algorithm_class"] = "subprocess:Popen"
    state_file.write_text(json.dumps(state))
    with pytest.raises(unirl.UnirlError, match="algorithm class is 'subprocess:Popen'"):
        unirl.restore(path)
    del state["algorithm_class"]  # a checkpoint from before algorithm_class: found by its registered name
    state_file.write_text(json.dumps(state))
    unirl.restore(path).stop()


def test_variant_class_checkpoint_restores_by_its_registered_name(tmp_path):
    cls = get_algorithm_class("PPO[pendulum]")
    config = {k: v for k, v in cls.conformance.run_config.items() if k != "total_envs"}
    algo = cls(dict(config, backend="local", num_envs_per_worker=2))
    try:
        algo.train()
        path = algo.save(str(tmp_path / "ck"))
        digest = algo.weights_digest()
    finally:
        algo.stop()
    state = json.load(open(os.path.join(path, "state.json")))
    assert state["algorithm"] == "PPO" and state["algorithm_class"] == "unirl.algorithms.ppo:PPO[pendulum]"
    for restore in (unirl.restore, cls.from_checkpoint):  # no trust_checkpoint needed
        restored = restore(path)
        try:
            assert restored.weights_digest() == digest
        finally:
            restored.stop()


@pytest.mark.timeout(600)
def test_resume_of_a_plugin_run_needs_trust(tmp_path):
    run = tmp_path / "run"
    res = run_cli("train", f"--run={PLUGIN}", "--backend=local",
                  "--config", json.dumps({"num_envs_per_worker": 4, "train_batch_size": 64}),
                  "--stop", '{"training_iteration": 1}', "--evaluation-episodes", "0", "--quiet",
                  "--output", str(run), timeout=300, env=PLUGIN_ENV)
    assert res.returncode == 0, res.stderr
    res = run_cli("train", "--resume", str(run), "--stop", '{"training_iteration": 2}', "--quiet",
                  "--evaluation-episodes", "0", timeout=300, env=PLUGIN_ENV)
    assert res.returncode == 2 and "refusing to load" in res.stderr and PLUGIN in res.stderr, res.stderr
    res = run_cli("train", "--resume", str(run), "--stop", '{"training_iteration": 2}', "--quiet",
                  "--evaluation-episodes", "0", "--trust-checkpoint", timeout=300, env=PLUGIN_ENV)
    assert res.returncode == 0, res.stderr
    assert [json.loads(l)["iteration"] for l in open(run / "result.json")] == [1, 2]
