"""`unirl evaluate` restores the checkpoint's algorithm and runs its own evaluate(): ES's observation filter (saved as
`filter/...` arrays beside the policy) is applied, so the command gives exactly `algo.evaluate(n)`'s returns."""
import json

import numpy as np
import pytest

import unirl
from conftest import run_cli
from unirl import cli

ES_CONFIG = {"env": "CartPole-v1", "backend": "local", "episodes_per_batch": 8, "noise_table_size": 200000,
             "model": {"hidden_sizes": [8]}}


@pytest.fixture(scope="module")
def es_checkpoint(tmp_path_factory):
    """(checkpoint folder, the trained algorithm's evaluate(5) returns) of three ES iterations."""
    algo = unirl.build("ES", ES_CONFIG)
    try:
        for _ in range(3):
            algo.train()
        path = algo.save(str(tmp_path_factory.mktemp("es") / "ck"))
        assert any(k.startswith("filter/") for k in np.load(f"{path}/weights.npz").files)
        return path, algo.evaluate(5)["evaluation/episode_returns"]
    finally:
        algo.stop()


@pytest.mark.timeout(600)
def test_evaluate_cli_gives_the_algorithms_own_evaluation(es_checkpoint, tmp_path):
    path, want = es_checkpoint
    out = tmp_path / "ev.json"
    res = run_cli("evaluate", path, "--episodes", "5", "--json", str(out), timeout=300)
    assert res.returncode == 0, res.stderr
    ev = json.load(open(out))
    assert ev["episode_returns"] == want  # exactly, episode by episode
    assert set(ev) == {"checkpoint", "framework", "episodes", "episode_return_mean", "episode_return_std",
                       "episode_returns"}
    assert ev["episodes"] == 5 and ev["framework"] == "torch" and ev["episode_return_mean"] == np.mean(want)
    assert f"mean return {np.mean(want):.2f}" in res.stdout


def test_evaluate_seed_is_the_config_seed_of_the_restored_algorithm(es_checkpoint, tmp_path):
    path, _ = es_checkpoint
    out = tmp_path / "ev.json"
    assert cli.main(["evaluate", path, "--episodes", "4", "--seed", "7", "--json", str(out)]) == 0
    algo = unirl.restore(path, seed=7)
    try:
        want = algo.evaluate(4)["evaluation/episode_returns"]
    finally:
        algo.stop()
    assert json.load(open(out))["episode_returns"] == want


#: Two short iterations of every registered algorithm (local backend, small networks where it matters).
EVERY_ALGORITHM = {
    "PPO": {}, "A2C": {}, "A3C": {}, "IMPALA": {}, "APPO": {},
    "DQN": {"learning_starts": 0}, "APEX": {"learning_starts": 0}, "ASYNC_DQN": {},
    "ES": {"episodes_per_batch": 8, "noise_table_size": 200000, "model": {"hidden_sizes": [8]}},
    "ARS": {"noise_table_size": 100000},
    "SAC": {"learning_starts": 64, "model": {"hidden_sizes": [32, 32], "activation": "relu"}},  # discrete SAC
    "TD3": {"env": "Pendulum-v1", "learning_starts": 12, "model": {"hidden_sizes": [32, 32], "activation": "relu"}},
    "APEX_TD3": {"env": "Pendulum-v1", "learning_starts": 0, "model": {"hidden_sizes": [32, 32], "activation": "relu"}},
    "R2D2": {"learning_starts": 0, "train_batch_size": 64, "burn_in": 2,
             "model": {"hidden_sizes": [16], "activation": "relu", "lstm_cell_size": 8, "max_seq_len": 8}},
    "MBPO": {"env": "Pendulum-v1", "learning_starts": 12, "model_train_freq": 12, "rollout_batch_size": 20,
             "ensemble_size": 2, "training_intensity": 1.0, "model": {"hidden_sizes": [32, 32], "activation": "relu"},
             "dynamics_model": {"hidden_sizes": [16, 16]}},
    "PETS": {"env": "Pendulum-v1", "learning_starts": 200, "ensemble_size": 2, "num_particles": 2, "horizon": 3,
             "population": 8, "num_elites": 2, "planner_iterations": 2, "model": {"hidden_sizes": [8, 8]}},
    "AlphaZero": {"env": "tic_tac_toe", "games_per_iteration": 4, "num_simulations": 4, "replay_batch_size": 16,
                  "model": {"hidden_sizes": [16], "vf_share_layers": True}},
}


def test_every_registered_algorithm_is_checked():
    from unirl.registry import ALGORITHMS

    assert set(EVERY_ALGORITHM) == set(ALGORITHMS)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(EVERY_ALGORITHM))
def test_every_algorithm_evaluates_the_same_after_a_checkpoint(name, tmp_path):
    """The trained algorithm, the algorithm restored from its checkpoint and the command line give the same
    episode returns, episode by episode (the same seeds: one evaluation path)."""
    algo = unirl.build(name, dict({"env": "CartPole-v1", "backend": "local"}, **EVERY_ALGORITHM[name]))
    try:
        for _ in range(2):
            algo.train()
        want = algo.evaluate(3)["evaluation/episode_returns"]
        path = algo.save(str(tmp_path / "ck"))
    finally:
        algo.stop()
    restored = unirl.restore(path)
    try:
        assert restored.evaluate(3)["evaluation/episode_returns"] == want
    finally:
        restored.stop()
    out = tmp_path / "ev.json"
    assert cli.main(["evaluate", path, "--episodes", "3", "--json", str(out)]) == 0
    assert json.load(open(out))["episode_returns"] == want


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["DQN", "SAC", "TD3", "ARS"])
def test_a_checkpoint_restored_into_jax_takes_the_same_greedy_actions(name):
    """Conformance level 4's "checkpoint actions": the torch checkpoint evaluated again gives the same returns, and
    restored into JAX it takes the same greedy actions (Q-values, squashed Gaussian, tanh-deterministic, linear)."""
    from unirl.conformance.agreement import checkpoint_agreement
    from unirl.conformance.framework_checks import small_config
    from unirl.conformance.report import PASSED

    records = checkpoint_agreement(name, "torch", ["jax"], 1e-4, small_config(name))
    assert [(r["framework"], r["status"]) for r in records] == [("torch", PASSED), ("jax", PASSED)], records
    assert records[1]["difference"]["observations"] > 0


def test_the_checkpoint_check_catches_a_framework_that_computes_other_outputs():
    from unirl.conformance.agreement import checkpoint_agreement
    from unirl.conformance.framework_checks import small_config
    from unirl.conformance.report import FAILED

    leaky = "broken_plugins:LeakyReluTorchAdapter"
    records = checkpoint_agreement("TD3", "torch", [leaky], 1e-4, small_config("TD3"))
    bad = records[1]
    assert bad["status"] == FAILED and bad["framework"] == leaky
    assert f"the checkpoint restored into {leaky} acts differently from torch on" in bad["message"]
    assert bad["difference"]["mismatches"]
