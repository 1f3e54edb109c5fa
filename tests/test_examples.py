"""Every script in examples/ runs, with a tiny budget, as a user would run it (a process each, with a timeout)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example_env() -> dict:
    """The environment a user has in the repository root: `examples` importable (for the import paths)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), ROOT) if p))


def run_example(name: str, *args: str, timeout: float = 240) -> str:
    import tempfile

    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args], cwd=tempfile.gettempdir(),
                          env=example_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_example_is_tested_and_listed():
    scripts = sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py") and f != "__init__.py")
    with open(__file__) as f:
        tests = f.read()
    with open(os.path.join(ROOT, "examples", "README.md")) as f:
        listing = f.read()
    assert scripts and all(f'"{s}"' in tests and f"`{s}`" in listing for s in scripts), scripts


@pytest.mark.timeout(300)
def test_custom_env_gives_the_same_digest_on_two_backends():
    local = run_example("custom_env.py", "--steps", "512")
    mp = run_example("custom_env.py", "--steps", "512", "--backend", "multiprocessing", "--num-workers", "2")
    digest = re.compile(r"weights digest (\w+)")
    assert digest.search(local).group(1) == digest.search(mp).group(1)


@pytest.mark.timeout(300)
def test_callbacks_logging_writes_the_metrics(tmp_path):
    out = run_example("callbacks_logging.py", "--steps", "512", "--out", str(tmp_path))
    assert "longest episode" in out
    if (tmp_path / "metrics.csv").exists():  # the CSV stand-in (mlflow not installed)
        header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
        assert "episode_return_mean" in header and "longest_episode" in header
        assert "checkpoint" in (tmp_path / "artifacts.txt").read_text()


@pytest.mark.timeout(300)
def test_third_party_algorithm_trains_and_runs_from_the_cli(tmp_path):
    assert "VPG:" in run_example("third_party_algorithm.py", "--steps", "512")
    proc = subprocess.run([sys.executable, "-m", "unirl.cli", "train", "--run", "examples.third_party_algorithm:VPG",
                           "--stop", '{"training_iteration": 2}', "--quiet", "--evaluation-episodes", "1",
                           "--output", str(tmp_path / "run")], cwd=tmp_path, env=example_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "evaluation.json").exists()


@pytest.mark.timeout(600)
def test_third_party_backend_is_certified_by_the_suite():
    out = run_example("third_party_backend.py", "--steps", "512", timeout=540)
    digests = re.search(r"on local (\w+), on \S+ (\w+)", out)
    assert digests.group(1) == digests.group(2)
    assert "check(s) failed" not in out


@pytest.mark.timeout(300)
def test_checkpoint_restores_into_another_framework():
    pytest.importorskip("jax")
    out = run_example("checkpoint_other_framework.py", "--steps", "1024")
    assert "agree on 100.0%" in out


@pytest.mark.timeout(600)
def test_tune_pbt_runs_a_tiny_population(tmp_path):
    pytest.importorskip("ray.tune")
    out = run_example("tune_pbt.py", "--num-samples", "2", "--steps", "1024", "--perturbation-interval", "2",
                      "--output", str(tmp_path), timeout=540)
    assert "episode_return_mean" in out


@pytest.mark.timeout(600)
def test_ray_walkthrough_gives_the_same_bits_on_every_backend(tmp_path):
    """docs/backends.md's walkthrough: the example's env by import path, local, multiprocessing and Ray."""
    pytest.importorskip("ray")
    runs = {"local": ["--config", '{"num_envs_per_worker": 8}'],
            "multiprocessing": ["--backend", "multiprocessing", "--config", '{"num_workers": 2, "num_envs_per_worker": 4}'],
            "ray": ["--backend", "ray", "--config", '{"num_workers": 2, "num_envs_per_worker": 4}']}
    digests = {}
    for name, flags in runs.items():
        proc = subprocess.run([sys.executable, "-m", "unirl.cli", "train", "--run=PPO", "--env=examples.custom_env:Corridor",
                               "--stop", '{"timesteps_total": 1024}', "--evaluation-episodes", "1", "--quiet",
                               "--output", str(tmp_path / name), *flags], cwd=tmp_path, env=example_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(tmp_path / name / "evaluation.json") as f:
            digests[name] = json.load(f)["weights_digest"]
    assert len(set(digests.values())) == 1, digests
