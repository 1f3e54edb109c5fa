"""Multi-agent runs on PettingZoo envs: unchanged algorithms, masks, self-play, bit-identical on every backend."""
import json
import os

import numpy as np
import pytest

pytest.importorskip("pettingzoo")
pytest.importorskip("mpe2")

import unirl  # noqa: E402
from unirl.errors import UnirlError  # noqa: E402

from conftest import mpi_runs_in_one_job, requires_mpi  # noqa: E402

pytestmark = pytest.mark.timeout(600)

SPREAD = "mpe2.simple_spread_v3"
C4 = "pettingzoo.classic.connect_four_v3"
TTT = "pettingzoo.classic.tictactoe_v3"
TOTAL_ENVS = 4
WORKER_COUNTS = (1, 2, 4)
TIME_FIELDS = ("time_this_iter_s", "time_total_s", "env_steps_per_s")


def spread_config(backend="local", num_workers=1, **extra):
    return dict({"env": SPREAD, "backend": backend, "seed": 3, "num_workers": num_workers,
                 "num_envs_per_worker": TOTAL_ENVS // num_workers, "train_batch_size": TOTAL_ENVS * 8,
                 "minibatch_size": 32, "num_epochs": 2}, **extra)


def ttt_config(backend="local", num_workers=1, **extra):
    """DQN with masks on tic-tac-toe, one policy per seat (independent learners, a turn-based env)."""
    return dict({"env": TTT, "backend": backend, "seed": 5, "num_workers": num_workers,
                 "num_envs_per_worker": TOTAL_ENVS // num_workers, "train_batch_size": TOTAL_ENVS * 4,
                 "learning_starts": 16, "replay_batch_size": 16, "target_network_update_freq": 32,
                 "multi_agent": {"policies": {"player_1": {}, "player_2": {"lr": 3e-4}}}}, **extra)


def run(algo_name, config, iterations=3):
    algo = unirl.build(algo_name, config)
    try:
        results = []
        for _ in range(iterations):
            r = algo.train()
            results.append({k: v for k, v in r.items() if k not in TIME_FIELDS})
        return algo.flat_weights(), results
    finally:
        algo.stop()


def run_spread(backend, num_workers):
    return run("PPO", spread_config(backend, num_workers), iterations=4)


def run_ttt(backend, num_workers):
    return run("DQN", ttt_config(backend, num_workers))


def assert_same(reference, got, label):
    (w0, r0), (w1, r1) = reference, got
    assert w0.shape == w1.shape, label
    if not np.array_equal(w0.view(np.uint32), w1.view(np.uint32)):
        i = int(np.flatnonzero(w0.view(np.uint32) != w1.view(np.uint32))[0])
        pytest.fail(f"{label}: weights differ first at index {i}: {w0[i]!r} vs {w1[i]!r}")
    assert json.dumps(r0, sort_keys=True) == json.dumps(r1, sort_keys=True), label


@pytest.fixture(scope="module")
def spread_reference():
    return run_spread("local", 1)


@pytest.fixture(scope="module")
def ttt_reference():
    return run_ttt("local", 1)


def test_shared_policy_batches_and_metrics(spread_reference):
    w, results = spread_reference
    r = results[-1]
    # 3 agents share "shared": each iteration is 32 env steps, 96 agent steps; episodes are 25 steps long
    assert r["timesteps_total"] == 4 * 32 and r["episodes_total"] == 4
    assert r["policy/shared/agent_steps_total"] == 4 * 96
    assert set(k for k in r if k.startswith("agent/")) == {f"agent/agent_{i}/episode_return_mean" for i in range(3)}
    assert "learner/shared/kl" in r


@pytest.mark.parametrize("num_workers", (2, 4))
def test_local_worker_counts(spread_reference, ttt_reference, num_workers):
    assert_same(spread_reference, run_spread("local", num_workers), f"spread local/{num_workers}")
    assert_same(ttt_reference, run_ttt("local", num_workers), f"tictactoe local/{num_workers}")


@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_multiprocessing(spread_reference, ttt_reference, num_workers):
    assert_same(spread_reference, run_spread("multiprocessing", num_workers), f"spread multiprocessing/{num_workers}")
    if num_workers != 2:
        assert_same(ttt_reference, run_ttt("multiprocessing", num_workers), f"tictactoe multiprocessing/{num_workers}")


@pytest.mark.parametrize("num_workers", (1, 4))
def test_ray(spread_reference, ttt_reference, ray_session, num_workers):
    assert_same(spread_reference, run_spread("ray", num_workers), f"spread ray/{num_workers}")
    assert_same(ttt_reference, run_ttt("ray", num_workers), f"tictactoe ray/{num_workers}")


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory):
    return mpi_runs_in_one_job(tmp_path_factory.mktemp("mpi_ma"), "test_multi_agent", "run_spread", WORKER_COUNTS,
                               timeout=400)


@requires_mpi
@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
def test_mpi(spread_reference, mpi_runs, num_workers):
    w, results = mpi_runs[num_workers]
    ref = (spread_reference[0], json.loads(json.dumps(spread_reference[1])))
    assert_same(ref, (w, results), f"spread mpi/{num_workers}")


def test_independent_policies_start_different_and_learn_separately(ttt_reference):
    with unirl.build("DQN", ttt_config()) as algo:
        a, b = (algo.learners[p].policy.get_flat_weights() for p in ("player_1", "player_2"))
        assert a.shape == b.shape and not np.array_equal(a, b)
        assert algo.learners["player_2"].config.lr == 3e-4 and algo.learners["player_1"].config.lr != 3e-4
        r = algo.train()
        # each policy gets 4 transitions of each of its 4 slots; the turn-based env took at least 2 x 16 moves
        assert r["policy/player_1/agent_steps_total"] == r["policy/player_2/agent_steps_total"] == 16
        assert r["timesteps_total"] >= 32


def test_exact_resume(tmp_path):
    cfg = ttt_config()
    with unirl.build("DQN", cfg) as algo:
        for _ in range(2):
            algo.train()
        path = algo.save(str(tmp_path / "ckpt"))
        for _ in range(2):
            algo.train()
        expected = algo.weights_digest()
    with unirl.restore(path, resume=True) as resumed:
        assert type(resumed).__name__ == "MultiAgentDQN"
        for _ in range(2):
            r = resumed.train()
        assert r["weights_digest"] == expected


def test_masked_actions_are_always_legal():
    """Categorical and epsilon-greedy over masked heads never choose an illegal move, and log-probs and entropies
    are those of the legal actions alone."""
    import gymnasium as gym

    from unirl.distributions import Categorical, masked
    from unirl.models import ModelConfig, build_module
    from unirl.ops import numpy_ops
    from unirl.spaces import MASKED

    obs_space = gym.spaces.Dict({"observation": gym.spaces.Box(-1, 1, (4,)),
                                 "action_mask": gym.spaces.Box(0, 1, (5,), np.int8)})
    for kind, explore in (("actor_critic", {}), ("q", {"epsilon": 1.0})):
        module = build_module(kind, obs_space, gym.spaces.Discrete(5), ModelConfig())
        assert module.obs_dim == 9
        from unirl.policy import PolicySpec

        policy = PolicySpec("torch", module, 0).build()
        rng = np.random.default_rng(0)
        obs = np.concatenate([rng.standard_normal((512, 4)), rng.integers(0, 2, (512, 5))], axis=1).astype(np.float32)
        obs[:, 4 + 2] = 1.0  # at least one legal action
        inputs = policy.policy_outputs(obs)
        actions = module.dist.sample_numpy(inputs, rng.random((512, module.dist.noise_per_step)), **explore)
        assert np.all(obs[np.arange(512), 4 + actions] == 1.0), kind
        assert np.all(obs[np.arange(512), 4 + module.dist.greedy_numpy(inputs)] == 1.0), kind
    logits = np.array([[0.3, -1.0, 2.0, 0.5]], np.float32)
    mask = np.array([[1, 0, 1, 1]], np.float32)
    masked_logits = logits + (1 - mask) * MASKED
    legal = Categorical(3)
    ref = legal.entropy(numpy_ops, logits[:, [0, 2, 3]])
    np.testing.assert_allclose(masked(Categorical(4)).entropy(numpy_ops, masked_logits), ref, rtol=1e-6)
    np.testing.assert_allclose(Categorical(4).logp(numpy_ops, masked_logits, np.array([2])),
                               legal.logp(numpy_ops, logits[:, [0, 2, 3]], np.array([1])), rtol=1e-6)


def test_pettingzoo_api_tests_pass_on_the_envs_used():
    from mpe2 import simple_spread_v3
    from pettingzoo.classic import connect_four_v3, tictactoe_v3
    from pettingzoo.test import api_test, parallel_api_test, seed_test

    api_test(connect_four_v3.env(), num_cycles=100)
    api_test(tictactoe_v3.env(), num_cycles=100)
    parallel_api_test(simple_spread_v3.parallel_env(), num_cycles=100)
    seed_test(simple_spread_v3.env, num_cycles=20)
    seed_test(connect_four_v3.env, num_cycles=20)


def test_self_play_league_in_checkpoints(tmp_path):
    cfg = {"env": C4, "seed": 1, "num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 64,
           "num_epochs": 1,
           "multi_agent": {"policies": {"main": {}, "opponent": {}},
                           "self_play": {"learner": "main", "opponent": "opponent", "window": 4,
                                         "snapshot_win_rate": 0.0}}}
    with unirl.build("PPO", cfg) as algo:
        assert algo.policies_to_train == ["main"]
        # seats alternate over envs: the learner plays player_0 in even envs, player_1 in odd ones
        assert algo.mapping[0] == {"player_0": "main", "player_1": "opponent"}
        assert algo.mapping[1] == {"player_0": "opponent", "player_1": "main"}
        opponent_before = algo.learners["opponent"].policy.get_flat_weights().copy()
        r = algo.train()
        assert "policy/main/win_rate" in r and r["league/size"] >= 1
        for _ in range(2):
            r = algo.train()
        assert r["league/snapshots_added"] >= 1 and r["league/size"] == 1 + r["league/snapshots_added"]
        path = algo.save(str(tmp_path / "ckpt"))
        for _ in range(2):
            algo.train()
        expected = algo.weights_digest()
        # the opponent never learns: its weights are always a league member
        members = [m for m in algo.league.members] + [opponent_before]
        w = algo.learners["opponent"].policy.get_flat_weights()
        assert any(np.array_equal(w, m) for m in members)
    with unirl.restore(path, resume=True) as resumed:
        for _ in range(2):
            r = resumed.train()
        assert r["weights_digest"] == expected


def test_evaluate_and_compute_actions():
    with unirl.build("PPO", spread_config()) as algo:
        ev = algo.evaluate(3)
        assert ev["evaluation/episodes"] == 3 and np.isfinite(ev["evaluation/episode_return_mean"])
        assert algo.evaluate(3)["evaluation/episode_returns"] == ev["evaluation/episode_returns"]
        obs = np.zeros((2, 18), np.float32)
        assert algo.compute_actions(obs).shape == (2,)
    with unirl.build("DQN", ttt_config()) as algo:
        with pytest.raises(UnirlError, match="say which one acts"):
            algo.compute_actions(np.zeros((1, 27), np.float32))


@pytest.mark.parametrize("config, message", [
    ({"env": SPREAD, "multi_agent": {"polices": {}}}, "unknown multi_agent key `polices`.*Did you mean `policies`"),
    ({"env": SPREAD, "multi_agent": {"policies": {"a": {}}, "policy_mapping": {"agent_0": "b"}}},
     r"names policies \['b'\]"),
    ({"env": SPREAD, "multi_agent": {"policies": {"a": {}, "b": {}}}}, "no `policy_mapping`"),
    ({"env": SPREAD, "multi_agent": {"policies": {"a": {"num_workers": 2}}}}, "belong to the whole run"),
    ({"env": "CartPole-v1", "multi_agent": {"policies": {"a": {}}}}, "needs a PettingZoo environment"),
    ({"env": "mpe2.simple_adversary_v3"}, "spaces differ"),
    ({"env": "pettingzoo.classic.no_such_game_v0"}, "cannot import module|needs PettingZoo"),
])
def test_bad_multi_agent_configs(config, message):
    with pytest.raises(UnirlError, match=message):
        unirl.build("PPO", dict(config, num_envs_per_worker=2, train_batch_size=128))


def test_asynchronous_algorithms_are_refused_in_one_sentence():
    with pytest.raises(UnirlError, match="IMPALA cannot run on a multi-agent env yet"):
        unirl.build("IMPALA", {"env": SPREAD})


def test_killed_worker_is_replaced_with_identical_results():
    import signal

    cfg = spread_config("multiprocessing", 2)
    ref = run("PPO", cfg, iterations=4)[0]
    with unirl.build("PPO", cfg) as algo:
        for it in range(4):
            if it == 2:
                os.kill(algo.backend.worker_pids()[0], signal.SIGKILL)
            r = algo.train()
        assert r["num_worker_restarts"] == 1
        np.testing.assert_array_equal(ref, algo.flat_weights())


def test_sac_and_a2c_run_unchanged_and_split_invariant():
    """Off-policy actor-critic on continuous actions (SAC, replay per policy) and A2C on a masked turn-based game:
    the same bits whatever the split of envs over workers."""
    sac = {"env": SPREAD, "env_config": {"continuous_actions": True}, "train_batch_size": 16, "learning_starts": 32,
           "replay_batch_size": 32}
    a2c = {"env": C4, "train_batch_size": 32}
    for name, cfg in (("SAC", sac), ("A2C", a2c)):
        one = run(name, dict(cfg, num_workers=1, num_envs_per_worker=4), iterations=4)
        two = run(name, dict(cfg, num_workers=2, num_envs_per_worker=2), iterations=4)
        assert_same(one, two, f"{name} 1 vs 2 workers")
        assert one[1][-1]["timesteps_total"] >= 4 * 16


def test_agents_leaving_early_keep_their_own_transitions():
    """A parallel env whose agents finish at different times: each slot's transitions end with its own terminal
    flag, the other agent keeps acting, and the episode's return is the sum of both agents' rewards."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "custom_env_files"))
    from unirl.multi_agent.env import EnvInfo
    from unirl.multi_agent.worker import MultiAgentWorker, MultiAgentWorkerSpec
    from unirl.models import ModelConfig, build_module
    from unirl.policy import PolicySpec

    env = "ma_envs:race"
    info = EnvInfo(env)
    assert info.agents == ["fast", "slow"] and info.api == "parallel"
    module = build_module("actor_critic", info.obs_spaces["fast"], info.action_spaces["fast"], ModelConfig())
    mapping = {0: {"fast": "p", "slow": "p"}}
    worker = MultiAgentWorker(MultiAgentWorkerSpec(env, {}, 0, 0, 0, 1, 12, info.agents, mapping,
                                                   {"p": PolicySpec("torch", module, 0)}, info.obs_spaces))
    out = worker.sample()
    b = out["batches"]["p"]
    assert b["obs"].shape == (12, 2, 2)
    for col, goal in ((0, 2), (1, 4)):
        ends = np.flatnonzero(b["terminateds"][:, col] | b["truncateds"][:, col])
        pos, t = b["obs"][:, col, 0], b["obs"][:, col, 1]
        # within an episode the agent's time advances by one per own transition, and an episode ends at its goal
        # (terminated) or at the 6-step limit (truncated)
        for e in ends:
            assert b["terminateds"][e, col] == (pos[e] + b["actions"][e, col] >= goal)
            assert b["truncateds"][e, col] == (not b["terminateds"][e, col] and t[e] == 5)
    # env episodes: each game's return is the two agents' summed rewards
    for _, _, returns, length in out["episodes"]:
        assert returns.shape == (2,) and 1 <= length <= 6 and returns.sum() <= 2 + 4


def test_an_agent_that_never_acts_is_an_error_naming_it():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "custom_env_files"))
    with pytest.raises(Exception, match=r"without agents \['ghost'\] acting"):
        with unirl.build("PPO", {"env": "ma_envs:race", "env_config": {"with_ghost": True}, "num_envs_per_worker": 1,
                                 "train_batch_size": 4, "minibatch_size": 4,
                                 "multi_agent": {"policies": {"shared": {}}}}) as algo:
            algo.train()


def test_board_observations_keep_their_shape_for_a_convolutional_torso():
    import gymnasium as gym

    from unirl.models import ModelConfig, build_module

    board = gym.spaces.Dict({"observation": gym.spaces.Box(0, 1, (6, 7, 2), np.int8),
                             "action_mask": gym.spaces.Box(0, 1, (7,), np.int8)})
    module = build_module("actor_critic", board, gym.spaces.Discrete(7), ModelConfig())
    assert module.obs_dim == 6 * 7 * 2 + 7 and module.inner.obs_shape == (6, 7, 2)
    assert module.inner.config.conv_filters  # the small-image CNN, not an MLP over the flattened board
    mixed = gym.spaces.Dict({"board": gym.spaces.Box(0, 1, (6, 7, 2), np.int8),
                             "turn": gym.spaces.Discrete(2)})
    with pytest.raises(UnirlError, match=r"image \(6, 7, 2\) beside other keys \['turn'\]"):
        build_module("actor_critic", mixed, gym.spaces.Discrete(7), ModelConfig())
