"""The family-neutral seam: SampleBatch joins keep every column, episode counts add up over an
iteration, parameter sets, gradients computed in one place and applied in another, modules by kind."""
import numpy as np
import pytest

import unirl
from unirl import sample_batch as sb
from unirl.distributions import Categorical, EpsilonGreedy
from unirl.errors import UnirlError
from unirl.execution import SyncSamples
from unirl.frameworks import get_adapter
from unirl.models import ModelConfig, QNetwork, build_module
from unirl.policy import Policy

EXTRA = "test_extra_step_column"
sb.register_column(EXTRA, "step")


@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_concat_keeps_every_column_in_env_order(num_workers):
    """Workers' batches joined in env order equal one batch of all envs, extra columns included."""
    algo = unirl.build("PPO", {"num_workers": 1, "num_envs_per_worker": 8, "train_batch_size": 128, "seed": 3})
    try:
        whole = algo.sampler.sample(algo.policy.get_flat_weights())
    finally:
        algo.stop()
    whole[EXTRA] = np.arange(whole.count, dtype=np.float32).reshape(whole.num_steps, whole.num_envs, 1)
    whole[sb.BEHAVIOUR_INPUTS] = np.random.default_rng(0).standard_normal((whole.num_steps, whole.num_envs, 2))
    assert len(whole[sb.EP_RETURNS]) > 0 and len(whole[sb.TRUNC_INDEX]) == 0
    k = 8 // num_workers
    parts = []
    for w in range(num_workers):
        envs = slice(w * k, (w + 1) * k)
        part = sb.SampleBatch({c: v[:, envs] for c, v in whole.items() if sb.COLUMN_KINDS[c] == "step"})
        part[sb.BOOTSTRAP_OBS] = whole[sb.BOOTSTRAP_OBS][envs]
        for index_key, value_keys in ((sb.TRUNC_INDEX, (sb.TRUNC_OBS,)), (sb.TERM_INDEX, (sb.TERM_OBS,)),
                                      (sb.EP_KEYS, (sb.EP_RETURNS, sb.EP_LENGTHS))):
            t, n = np.divmod(whole[index_key], 8)
            mine = (n >= w * k) & (n < (w + 1) * k)
            part[index_key] = (t * k + n - w * k)[mine]
            for vk in value_keys:
                part[vk] = whole[vk][mine]
        part = sb.SampleBatch({c: part[c] for c in whole})
        parts.append(part)
    joined = sb.SampleBatch.concat_envs(parts)
    assert list(joined) == list(whole)
    for c in whole:
        np.testing.assert_array_equal(joined[c], whole[c], err_msg=c)


def test_terminated_steps_keep_their_terminal_observation():
    """Each step that terminated its episode comes with the env's final observation (a dynamics model learns to
    predict it); next_observations puts it after that step."""
    from unirl.algorithms.dqn import next_observations

    with unirl.build("PPO", {"num_workers": 1, "num_envs_per_worker": 4, "train_batch_size": 256,
                             "minibatch_size": 64, "seed": 1}) as algo:
        batch = algo.sampler.sample(algo.policy.get_flat_weights())
    t, n = np.divmod(batch[sb.TERM_INDEX], 4)
    assert len(t) == int(batch[sb.TERMINATEDS].sum()) > 0 and batch[sb.TERMINATEDS][t, n].all()
    final = batch[sb.TERM_OBS]
    # CartPole terminates when the cart leaves [-2.4, 2.4] or the pole passes 12 degrees: the final state is past that
    assert np.all((np.abs(final[:, 0]) > 2.4) | (np.abs(final[:, 2]) > 12 * 2 * np.pi / 360))
    assert np.array_equal(next_observations(batch)[t, n], final)


def test_concat_refuses_an_undeclared_column():
    a = sb.SampleBatch({sb.REWARDS: np.zeros((2, 1), np.float32), "mystery": np.zeros(3)})
    with pytest.raises(ValueError, match="mystery.*register_column"):
        sb.SampleBatch.concat_envs([a, a])


def test_episode_counts_add_up_over_every_batch_of_an_iteration():
    """An iteration that samples twice reports the episodes of both batches."""
    from unirl.algorithms.ppo import PPO

    class TwoSamples(PPO):
        def training_step(self):
            for _ in range(2):
                batch = self.sampler.sample(self.policy.get_flat_weights())
                self.record_batch(batch)
                self.seen.append(batch[sb.EP_RETURNS].copy())
            return {}

    algo = TwoSamples({"num_envs_per_worker": 8, "train_batch_size": 256})
    algo.seen = []
    try:
        result = algo.train()
    finally:
        algo.stop()
    expected = np.concatenate(algo.seen)
    assert len(algo.seen[0]) > 0 and len(algo.seen[1]) > 0
    assert result["episodes_this_iter"] == len(expected)
    assert result["episode_returns_this_iter"] == expected.tolist()
    assert result["timesteps_total"] == 512


def q_loss(ops, module, params, batch, hp, target_params):
    """A one-step TD loss on a Q-network with a target network (the shape DQN needs)."""
    q = module.forward_train(ops, params, batch["obs"])["q"]
    q_next = ops.stop_gradient(module.forward_train(ops, target_params, batch["next_obs"])["q"])
    target = batch["rewards"] + hp["gamma"] * ops.sum(q_next * ops.one_hot(ops.argmax(q_next), 2), axis=-1)
    q_taken = ops.take_along_last(q, batch["actions"])
    return ops.mean(ops.square(q_taken - target)), {"q_mean": ops.mean(q_taken)}


def q_batch(seed=0, rows=32):
    rng = np.random.default_rng(seed)
    return {"obs": rng.standard_normal((rows, 4)).astype(np.float32),
            "next_obs": rng.standard_normal((rows, 4)).astype(np.float32),
            "actions": rng.integers(0, 2, rows).astype(np.int64),
            "rewards": rng.standard_normal(rows).astype(np.float32)}


def q_policy(framework="torch"):
    from unirl.optim import default_optimizer

    module = QNetwork(4, EpsilonGreedy(2), ModelConfig(hidden_sizes=(16,), dueling=True))
    return Policy(get_adapter(framework), module, module.init_params(0), loss=q_loss,
                  optimizer=default_optimizer(10.0), param_sets=("params", "target_params"))


def test_target_parameter_set_is_separate_and_syncs():
    policy = q_policy()
    before = policy.get_flat_weights("target_params")
    np.testing.assert_array_equal(before, policy.get_flat_weights())
    policy.learn_on_batch(q_batch(), {"lr": 1e-2, "gamma": 0.9})
    assert not np.array_equal(policy.get_flat_weights(), before)
    np.testing.assert_array_equal(policy.get_flat_weights("target_params"), before)
    policy.copy_params("params", "target_params")
    np.testing.assert_array_equal(policy.get_flat_weights("target_params"), policy.get_flat_weights())
    state = policy.get_state()
    assert {"params/q/0/w", "target_params/q/0/w", "opt/1/mu"} <= set(state)


def test_loss_sees_the_target_set():
    """Changing only the target parameters changes the loss (they reach the loss), not the gradient's target."""
    policy = q_policy()
    batch, hp = q_batch(), {"lr": 1e-2, "gamma": 0.9}
    _, stats_a = policy.compute_gradients(batch, hp)
    policy.set_flat_weights(policy.get_flat_weights("target_params") * 2.0, "target_params")
    _, stats_b = policy.compute_gradients(batch, hp)
    assert stats_a["total_loss"] != stats_b["total_loss"]
    assert stats_a["q_mean"] == stats_b["q_mean"]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_compute_then_apply_gradients_equals_learn_on_batch(framework):
    """Gradients computed, shipped as NumPy and applied elsewhere give learn_on_batch's bits."""
    a, b = q_policy(framework), q_policy(framework)
    batch, hp = q_batch(1), {"lr": 3e-3, "gamma": 0.9}
    for _ in range(3):
        a.learn_on_batch(batch, hp)
        grad, stats = b.compute_gradients(batch, hp)
        assert grad.dtype == np.float32 and grad.shape == (b.layout.size,)
        b.apply_gradients(grad, {"lr": 3e-3})
    np.testing.assert_array_equal(a.get_flat_weights(), b.get_flat_weights())
    for k, v in a.get_optimizer_state().items():
        np.testing.assert_array_equal(v, b.get_optimizer_state()[k], err_msg=k)


def test_modules_by_kind_and_errors():
    import gymnasium as gym

    obs, act = gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3)
    ac = build_module("actor_critic", obs, act, ModelConfig())
    assert isinstance(ac.dist, Categorical) and "vf/out/w" in ac.layout.names
    q = build_module("q", obs, act, ModelConfig(dueling=True))
    assert isinstance(q.dist, EpsilonGreedy) and "adv/out/w" in q.layout.names
    lin = build_module("policy", obs, act, ModelConfig(hidden_sizes=()))
    assert lin.layout.names == ["pi/out/w", "pi/out/b"]
    with pytest.raises(UnirlError, match="unknown module kind `actor_critc`.*[Dd]id you mean `actor_critic`"):
        build_module("actor_critc", obs, act, ModelConfig())


def test_dueling_q_values_are_value_plus_centred_advantage():
    from unirl.ops import numpy_ops as ops

    q = QNetwork(4, EpsilonGreedy(3), ModelConfig(hidden_sizes=(8,), dueling=True))
    p = q.init_params(0)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    h = np.tanh(x @ p["q/0/w"] + p["q/0/b"])
    adv = h @ p["adv/out/w"] + p["adv/out/b"]
    expected = h @ p["value/out/w"] + p["value/out/b"] + adv - adv.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(q.forward_inference(ops, p, x), expected, rtol=1e-6)


def test_epsilon_greedy_uses_both_uniforms():
    d = EpsilonGreedy(4)
    q = np.array([[0.0, 1.0, 0.0, 0.0]] * 3)
    noise = np.array([[0.05, 0.99], [0.5, 0.0], [0.05, 0.3]])
    np.testing.assert_array_equal(d.sample_numpy(q, noise, epsilon=0.1), [3, 1, 1])
    np.testing.assert_array_equal(d.sample_numpy(q, noise, epsilon=0.0), [1, 1, 1])


def test_workers_receive_a_policy_spec_not_an_algorithm_name():
    """A worker builds its policy from the pickled spec alone (no registry lookup)."""
    import pickle

    from unirl.rollout import RolloutWorker

    algo = unirl.build("PPO", {"num_envs_per_worker": 2, "train_batch_size": 16, "minibatch_size": 16})
    try:
        spec = pickle.loads(pickle.dumps(algo.worker_specs()[0]))
        assert not hasattr(spec, "algo")
        worker = RolloutWorker(spec)
        batch = worker.sample(algo.policy.get_flat_weights())
        np.testing.assert_array_equal(batch[sb.ACTIONS], algo.sampler.sample(algo.policy.get_flat_weights())[sb.ACTIONS])
    finally:
        algo.stop()
