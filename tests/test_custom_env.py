"""Custom environments reach worker processes on every backend (an env registered with
gymnasium.register in the user's script, a gym.Env class, a creator function, "module:Class"),
and Gymnasium spaces are honoured exactly (Discrete(3, start=-1): the env receives -1, 0, 1)."""
import json
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import unirl
from conftest import MPIEXEC, REPO, requires_mpi
from unirl.errors import UnirlError

FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "custom_env_files")
ALL_MODES = "registered,registered_str,class,function,module"


def run_script(backend: str, modes: str, timeout: int, launcher=()) -> dict:
    """tests/custom_env_files/user_script.py: defines LineEnv in __main__, registers it, trains PPO
    with 2 workers on `backend` for each mode; returns {mode: digest, episodes, ...}."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([FILES, REPO, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([*launcher, sys.executable, os.path.join(FILES, "user_script.py"), backend, modes],
                         capture_output=True, text=True, timeout=timeout, cwd=FILES, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def local_results():
    return run_script("local", ALL_MODES, timeout=240)


def test_every_form_trains_locally_with_offset_actions(local_results):
    # the env raises on any action outside -1, 0, 1: training at all proves the offset
    assert set(local_results) == set(ALL_MODES.split(","))
    assert len({r["digest"] for r in local_results.values()}) == 1  # the same env, whatever the form
    r = local_results["class"]
    assert r["episodes"] > 0 and all(-2.1 < x <= 1.0 for x in r["returns"])


@pytest.mark.timeout(300)
def test_script_registered_envs_reach_multiprocessing_workers(local_results):
    mp = run_script("multiprocessing", ALL_MODES, timeout=280)
    assert {m: r["digest"] for m, r in mp.items()} == {m: r["digest"] for m, r in local_results.items()}


@pytest.mark.timeout(300)
def test_script_registered_envs_reach_ray_workers(local_results):
    pytest.importorskip("ray")
    modes = "registered,class,function"
    ray = run_script("ray", modes, timeout=280)
    assert {m: r["digest"] for m, r in ray.items()} == {m: local_results[m]["digest"] for m in modes.split(",")}


@requires_mpi
@pytest.mark.timeout(200)
def test_script_env_reaches_mpi_ranks(local_results):
    mpi = run_script("mpi", "function", timeout=180, launcher=(MPIEXEC, "-n", "3"))
    assert mpi["function"]["digest"] == local_results["function"]["digest"]


def test_payload_carries_a_main_entry_point_by_value():
    import cloudpickle

    from unirl.env import ensure_env_registered, env_payload, register_custom_env

    class Tiny(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

    env_id = register_custom_env(Tiny)
    assert env_id.startswith("unirl-custom/") and env_id.endswith("-v0")
    assert register_custom_env(Tiny) == env_id  # registering again is a no-op
    payload = env_payload(env_id)
    spec = cloudpickle.loads(payload)
    assert spec.id == env_id and spec.entry_point is not None
    del gym.registry[env_id]
    ensure_env_registered(payload)  # what a worker does
    assert env_id in gym.registry
    assert env_payload("gymnasium.envs.classic_control:CartPole-v1") is None
    with pytest.raises(UnirlError, match="cannot rebuild the environment"):
        ensure_env_registered(b"not a pickle")


def test_discrete_start_and_multidiscrete_start_are_offset():
    from unirl.env import ZeroBasedActions

    class Env(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)

        def __init__(self, space):
            self.action_space = space
            self.got = None

        def reset(self, *, seed=None, options=None):
            return np.zeros(1, np.float32), {}

        def step(self, a):
            self.got = a
            return np.zeros(1, np.float32), 0.0, False, False, {}

    w = ZeroBasedActions(Env(gym.spaces.Discrete(3, start=-1)))
    assert w.action_space == gym.spaces.Discrete(3)
    w.step(np.int64(0))
    assert w.unwrapped.got == -1
    w = ZeroBasedActions(Env(gym.spaces.MultiDiscrete([2, 3], start=[5, -1])))
    w.step(np.array([1, 0]))
    assert w.unwrapped.got.tolist() == [6, -1]


def test_unsupported_spaces_are_one_sentence():
    class TupleActions(gym.Env):
        observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        action_space = gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(2)))

    class DictObs(gym.Env):  # Dict observations are flattened (unirl.spaces), but a Text key cannot be
        observation_space = gym.spaces.Dict({"a": gym.spaces.Box(-1, 1, (2,), np.float32),
                                             "mission": gym.spaces.Text(10)})
        action_space = gym.spaces.Discrete(2)

    with pytest.raises(UnirlError, match=r"action space Tuple\(.*is not supported"):
        unirl.build("PPO", {"env": TupleActions})
    with pytest.raises(UnirlError, match=r"Dict observation key `mission` is a Text space.*FilterObservation"):
        unirl.build("PPO", {"env": DictObs})
    with pytest.raises(UnirlError, match="an environment must be a Gymnasium id"):
        unirl.build("PPO", {"env": 5})


def test_dict_observations_with_a_mask_train_and_act_legally():
    """A single-agent env observing {"position": Box, "mode": Discrete, "action_mask": Box}: flattened (the Discrete
    key one-hot, the mask last), the module reads the features only and never picks a masked action."""
    class MaskedLine(gym.Env):
        observation_space = gym.spaces.Dict({"position": gym.spaces.Box(-5, 5, (1,), np.float32),
                                             "mode": gym.spaces.Discrete(2),
                                             "action_mask": gym.spaces.Box(0, 1, (3,), np.int8)})
        action_space = gym.spaces.Discrete(3)

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            self.x, self.t = 0, 0
            return self._obs(), {}

        def _obs(self):
            mask = np.array([self.x > -3, 1, self.x < 3], np.int8)  # no move past +-3
            return {"position": np.array([self.x], np.float32), "mode": self.t % 2, "action_mask": mask}

        def step(self, action):
            assert self._obs()["action_mask"][action], "a masked action was taken"
            self.x += int(action) - 1
            self.t += 1
            return self._obs(), float(self.x), False, self.t >= 20, {}

    for algo_name, extra in (("PPO", {"minibatch_size": 32}), ("DQN", {"learning_starts": 0})):
        algo = unirl.build(algo_name, dict({"env": MaskedLine, "num_envs_per_worker": 2, "train_batch_size": 64},
                                           **extra))
        try:
            assert algo.policy.module.obs_dim == 1 + 2 + 3
            for _ in range(3):
                algo.train()  # the env asserts every action is legal
        finally:
            algo.stop()


def test_module_class_form_is_checked_and_built():
    sys.path.insert(0, FILES)
    try:
        algo = unirl.build("PPO", {"env": "line_env_module:LineEnv", "env_config": {"goal": 2},
                                   "num_envs_per_worker": 2, "train_batch_size": 32, "minibatch_size": 32})
        try:
            assert algo.train()["timesteps_total"] == 32
        finally:
            algo.stop()
        with pytest.raises(UnirlError, match="cannot load environment `line_env_module:NoSuchEnv`|unknown environment"):
            unirl.build("PPO", {"env": "line_env_module:NoSuchEnv"})
    finally:
        sys.path.remove(FILES)


def test_compute_actions_returns_the_envs_own_action_values():
    sys.path.insert(0, FILES)
    try:
        from line_env_module import LineEnv

        algo = unirl.build("PPO", {"env": LineEnv, "num_envs_per_worker": 2, "train_batch_size": 32,
                                   "minibatch_size": 32})
        try:
            obs = np.linspace(-5, 5, 50, dtype=np.float32)[:, None]
            acts = algo.compute_actions(obs, explore=True)
            assert set(acts.tolist()) <= {-1, 0, 1} and -1 in acts.tolist()
            assert set(algo.compute_actions(obs).tolist()) <= {-1, 0, 1}
        finally:
            algo.stop()
    finally:
        sys.path.remove(FILES)
