"""A run folder evaluates to its own evaluation: `unirl evaluate RUN_DIR` and `unirl.restore(RUN_DIR).evaluate()`
give, episode by episode, the returns the run wrote to evaluation.json at the end of training (the same number of
episodes: `--evaluation-episodes K` is recorded as config `evaluation_num_episodes`), for every registered algorithm
trained on multiprocessing, and ES and IMPALA trained on Ray and under MPI; ES's and ARS's observation filter and
PPO's observation normalization are applied in every framework the checkpoint is loaded into."""
import json

import pytest

import unirl
from conftest import requires_mpi, run_cli
from test_evaluate_cli import EVERY_ALGORITHM
from unirl import cli


def _train(name, run_dir, backend="multiprocessing", episodes=3):
    config = dict({"num_workers": 2}, **EVERY_ALGORITHM[name])
    env = config.pop("env", "CartPole-v1")
    code = cli.main(["train", f"--run={name}", f"--env={env}", f"--backend={backend}", "--config", json.dumps(config),
                     "--stop", '{"training_iteration": 2}', "--evaluation-episodes", str(episodes),
                     "--output", str(run_dir), "--quiet"])
    assert code == 0
    with open(run_dir / "evaluation.json") as f:
        return json.load(f)["evaluation/episode_returns"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(EVERY_ALGORITHM))
def test_a_run_folder_evaluates_to_its_own_evaluation(name, tmp_path):
    run_dir = tmp_path / "run"
    want = _train(name, run_dir)
    assert len(want) == 3
    assert json.load(open(run_dir / "params.json"))["config"]["evaluation_num_episodes"] == 3
    out = tmp_path / "ev.json"
    assert cli.main(["evaluate", str(run_dir), "--json", str(out)]) == 0
    ev = json.load(open(out))
    assert ev["episodes"] == 3 and ev["episode_returns"] == want
    with unirl.restore(str(run_dir)) as algo:
        assert algo.evaluate()["evaluation/episode_returns"] == want


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["ES", "ARS"])
def test_a_population_run_evaluates_alike_in_every_framework(name, tmp_path, capsys):
    """The observation filter travels with the checkpoint into tf and jax: the same greedy returns as torch (a
    policy evaluated without its filter scores differently on these seeds, which the last check shows)."""
    run_dir = tmp_path / "run"
    want = _train(name, run_dir, backend="local", episodes=4)
    for framework in ("jax", "tf"):
        out = tmp_path / f"{framework}.json"
        assert cli.main(["evaluate", str(run_dir), "--framework", framework, "--json", str(out)]) == 0
        ev = json.load(open(out))
        assert ev["framework"] == framework and ev["episode_returns"] == want, framework
    from unirl.evaluation import evaluate_policy

    with unirl.restore(str(run_dir)) as algo:
        unfiltered = evaluate_policy(algo.policy, algo.config.env, None, 4, algo.config.seed).tolist()
    assert unfiltered != want


@pytest.mark.timeout(180)
def test_a_run_with_observation_normalization_evaluates_to_its_own_evaluation(tmp_path):
    """The normalization statistics are part of the module: the command line normalizes as the run did, in torch
    and in JAX (without them this policy's returns on these seeds differ, which the last check shows)."""
    run_dir = tmp_path / "run"
    config = {"num_workers": 2, "normalize_observations": True, "normalize_rewards": True, "train_batch_size": 512}
    assert cli.main(["train", "--run=PPO", "--backend=multiprocessing", "--config", json.dumps(config), "--stop",
                     '{"training_iteration": 3}', "--evaluation-episodes", "4", "--output", str(run_dir),
                     "--quiet"]) == 0
    want = json.load(open(run_dir / "evaluation.json"))["evaluation/episode_returns"]
    for framework in ("torch", "jax"):
        out = tmp_path / f"{framework}.json"
        assert cli.main(["evaluate", str(run_dir), "--framework", framework, "--json", str(out)]) == 0
        assert json.load(open(out))["episode_returns"] == want, framework
    import numpy as np

    from unirl.evaluation import evaluate_policy
    from unirl.normalization import OBS_MEAN, OBS_STD

    with unirl.restore(str(run_dir)) as algo:
        weights = algo.policy.get_weights()
        weights[OBS_MEAN] = np.zeros_like(weights[OBS_MEAN])
        weights[OBS_STD] = np.ones_like(weights[OBS_STD])
        algo.policy.set_weights(weights)
        assert evaluate_policy(algo.policy, algo.config.env, None, 4, algo.config.seed).tolist() != want


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["ray", pytest.param("mpi", marks=requires_mpi)])
@pytest.mark.parametrize("name", ["ES", "IMPALA"])
def test_a_run_folder_of_a_cluster_backend_evaluates_to_its_own_evaluation(name, backend, tmp_path):
    """Trained on Ray or under mpiexec (the command line relaunches itself), evaluated on the local backend."""
    run_dir = tmp_path / "run"
    config = dict({"num_workers": 2}, **EVERY_ALGORITHM[name])
    res = run_cli("train", f"--run={name}", f"--backend={backend}", "--config", json.dumps(config), "--stop",
                  '{"training_iteration": 2}', "--evaluation-episodes", "3", "--output", str(run_dir), "--quiet",
                  timeout=400)
    assert res.returncode == 0, res.stderr
    want = json.load(open(run_dir / "evaluation.json"))["evaluation/episode_returns"]
    assert len(want) == 3
    out = tmp_path / "ev.json"
    assert cli.main(["evaluate", str(run_dir), "--json", str(out)]) == 0
    assert json.load(open(out))["episode_returns"] == want
