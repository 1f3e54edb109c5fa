"""Shared fixtures: small, fast configs and a helper to run the CLI in a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A PPO config small enough for a unit test: 4 envs x 16 steps, 2 epochs of 2 minibatches.
TINY_PPO = {"env": "CartPole-v1", "num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32,
            "num_epochs": 2}


@pytest.fixture
def tiny_ppo():
    return dict(TINY_PPO)


def run_cli(*args, timeout=300, env=None):
    """Run `python -m unirl.cli ARGS` and return the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "unirl.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance per test module (Ray takes seconds to start)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()

