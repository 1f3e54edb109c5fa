"""`unirl train -f FILE`: YAML and JSON config files, `_` comment keys, flags over the file, and every
tuned config in configs/ run for one iteration (slow tests: each reaches the score its `_score` states)."""
from __future__ import annotations

import glob
import json
import os

import pytest

from unirl.cli import main, read_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
#: Env families that need an extra: the module whose absence skips a config's test.
NEEDS = {"HalfCheetah": "mujoco", "Swimmer": "mujoco", "ALE/": "ale_py", "MinAtar/": "minatar",
         "LunarLander": "Box2D"}
#: Smaller batches for the one-iteration run of the heaviest configs (a flag over the file, as a user would).
TINY = {"ppo_pong.yaml": {"train_batch_size": 256}, "ppo_lunarlander.yaml": {"train_batch_size": 1024}}


def run_train(*argv):
    return main(["train", "--quiet", "--evaluation-episodes", "0", *map(str, argv)])


def params(run_dir) -> dict:
    with open(os.path.join(run_dir, "params.json")) as f:
        return json.load(f)


def results(run_dir) -> list:
    with open(os.path.join(run_dir, "result.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def skip_without_extra(config: dict) -> None:
    for prefix, module in NEEDS.items():
        if prefix in config.get("env", ""):
            pytest.importorskip(module, reason=f"{config['env']} needs {module}")
    if config.get("framework") in ("jax", "tf"):
        pytest.importorskip({"jax": "jax", "tf": "tensorflow"}[config["framework"]])


@pytest.mark.timeout(120)
def test_yaml_file_with_comment_keys_trains(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("_doc: a comment, dropped\nrun: a2c\nstop: {training_iteration: 1}\nenv: CartPole-v1\n"
                 "num_envs_per_worker: 2\ntrain_batch_size: 32\nmodel: {_why: also dropped, hidden_sizes: [8]}\n")
    assert run_train("-f", f, "--output", tmp_path / "run") == 0
    p = params(tmp_path / "run")
    assert p["run"] == "A2C" and p["config"]["train_batch_size"] == 32
    assert p["config"]["model"]["hidden_sizes"] == [8] and "_why" not in p["config"]["model"]
    assert len(results(tmp_path / "run")) == 1


@pytest.mark.timeout(120)
def test_flags_override_the_file(tmp_path):
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"_comment": "x", "run": "ES", "stop": {"training_iteration": 5}, "seed": 3,
                             "num_envs_per_worker": 2, "train_batch_size": 32, "lr": 0.5}))
    assert run_train("-f", f, "--run", "A2C", "--seed", 1, "--stop", '{"training_iteration": 1}',
                     "--config", '{"lr": 0.25}', "--output", tmp_path / "run") == 0
    p = params(tmp_path / "run")
    assert p["run"] == "A2C" and p["config"]["seed"] == 1 and p["config"]["lr"] == 0.25
    assert p["config"]["train_batch_size"] == 32 and len(results(tmp_path / "run")) == 1


def test_the_benchmark_configs_load_with_their_doc_keys(tmp_path):
    for path in glob.glob(os.path.join(ROOT, "benchmarks", "configs", "*.json")):
        data = read_config_file(path)
        assert not [k for k in data if k.startswith("_")] and data["env"]


@pytest.mark.parametrize("text, says", [
    ("lr: [1, 2\n", "not valid YAML at line 2"),
    ("- just\n- a list\n", "must hold a mapping"),
    ("lr: 0.1\nnum_worker: 2\n", "Did you mean `num_workers`"),
    ("run: 3\n", "`run` in the config file"),
    ("stop: 100\n", "`stop` in the config file"),
])
def test_bad_files_are_one_line_errors(tmp_path, capsys, text, says):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    assert run_train("-f", f, "--output", tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "run")


def test_missing_file_and_resume_conflict(tmp_path, capsys):
    assert run_train("-f", tmp_path / "nope.yaml") == 2
    assert "cannot read the config file" in capsys.readouterr().err
    f = tmp_path / "ok.yaml"
    f.write_text("lr: 0.1\n")
    assert run_train("-f", f, "--resume", tmp_path) == 2
    assert "cannot be combined with --resume" in capsys.readouterr().err


def test_every_config_documents_its_score():
    assert len(CONFIGS) >= 10
    for path in CONFIGS:
        with open(path) as f:
            import yaml

            raw = yaml.safe_load(f)
        assert raw["_doc"] and raw["run"] and raw["stop"], path
        score = raw["_score"]
        assert set(score) == {"metric", "at_least", "within_timesteps"}, path
        assert raw["stop"]["timesteps_total"] >= score["within_timesteps"], path


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_tuned_config_runs_one_iteration(path, tmp_path):
    config = read_config_file(path)
    skip_without_extra(config)
    # The smallest budget: one iteration, on the local backend (the flags override the file).
    tiny = json.dumps(TINY.get(os.path.basename(path), {}))
    assert run_train("-f", path, "--stop", '{"training_iteration": 1}', "--backend", "local", "--config", tiny,
                     "--output", tmp_path / "run") == 0
    p = params(tmp_path / "run")
    assert p["config"]["env"] == config["env"] and len(results(tmp_path / "run")) == 1


@pytest.mark.slow
@pytest.mark.timeout(36000)
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_tuned_config_reaches_its_score(path, tmp_path):
    import yaml

    with open(path) as f:
        score = yaml.safe_load(f)["_score"]
    skip_without_extra(read_config_file(path))
    evaluation = 20 if score["metric"].startswith("evaluation/") else 0
    assert main(["train", "--quiet", "-f", path, "--evaluation-episodes", str(evaluation),
                 "--output", str(tmp_path / "run")]) == 0
    rows = results(tmp_path / "run")
    assert rows[-1]["timesteps_total"] <= score["within_timesteps"] + rows[0]["timesteps_total"]
    if evaluation:
        with open(tmp_path / "run" / "evaluation.json") as f:
            reached = json.load(f)["evaluation/episode_return_mean"]
    else:
        reached = max(r["episode_return_mean"] for r in rows if r.get("episode_return_mean") is not None)
    assert reached >= score["at_least"], f"{os.path.basename(path)}: {reached} < {score['at_least']}"
