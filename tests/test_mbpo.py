"""MBPO: model phases on schedule, minibatches mixed from real and imagined rows, imagined rows that follow the
model and the env's reward, bit-identical across worker counts and backends, exact resume with the model and its
buffer, clear errors."""
import numpy as np
import pytest

import unirl
from unirl import sample_batch as sb
from unirl.algorithms.dqn import NEXT_OBS
from unirl.dynamics import BOOTSTRAP, DELTA
from unirl.errors import UnirlError
from unirl.rewards import pendulum_reward

#: 4 Pendulum envs x 3 steps per iteration; a model phase every 24 env steps (every other iteration).
TINY = {"env": "Pendulum-v1", "seed": 2, "num_envs_per_worker": 4, "train_batch_size": 12, "learning_starts": 24,
        "replay_batch_size": 20, "training_intensity": 1.0, "model_train_freq": 24, "rollout_batch_size": 20,
        "model_rollout_length": 2, "ensemble_size": 2, "model_batch_size": 16, "real_ratio": 0.25,
        "model": {"hidden_sizes": [16, 16], "activation": "relu"},
        "dynamics_model": {"hidden_sizes": [8, 8], "activation": "swish"}}


def digest_after(iterations, **config):
    with unirl.build("MBPO", dict(TINY, **config)) as algo:
        for _ in range(iterations):
            algo.train()
        return algo.weights_digest()


def test_model_phases_fit_then_imagine_on_schedule():
    with unirl.build("MBPO", dict(TINY)) as algo:
        phases, sizes = [], []
        for _ in range(6):
            r = algo.train()
            phases.append(algo.model_phase)
            sizes.append(r["model/buffer_size"])
        # SAC's first steps are owed after 24 env steps (iteration 3); then a phase whenever 24 more are sampled
        assert phases == [-1, -1, 1, 2, 2, 3]
        # each phase adds 20 rollouts x 2 steps (Pendulum never terminates)
        assert sizes == [0, 0, 40, 80, 80, 120]
        assert algo.model_grad_steps == 72  # one model step per env step, owed at each phase
        model = algo.model.get_flat_weights()
        assert np.isfinite(model).all() and "model/model_nll" in r


def test_imagined_rows_follow_the_model_and_the_envs_reward():
    with unirl.build("MBPO", dict(TINY)) as algo:
        for _ in range(3):
            algo.train()
        rows = algo.model_buffer.take(np.arange(len(algo.model_buffer)))
        np.testing.assert_allclose(rows[sb.REWARDS],
                                   pendulum_reward(rows[sb.OBS], algo.policy.dist.env_actions(rows[sb.ACTIONS]),
                                                   rows[NEXT_OBS]), rtol=1e-6)
        # the second step of each rollout starts where the first ended
        np.testing.assert_array_equal(rows[sb.OBS][20:40], rows[NEXT_OBS][:20])
        # the model's mean change, not the env's: next states differ from any real one
        real = algo.buffer.take(np.arange(len(algo.buffer)))
        assert not np.isin(rows[NEXT_OBS][:, 2], real[NEXT_OBS][:, 2]).any()


def test_sac_minibatches_mix_real_and_imagined_rows():
    seen = []
    with unirl.build("MBPO", dict(TINY)) as algo:
        learn = algo.policy.learn_on_batches

        def record(batches, hp, **kw):
            seen.append({k: np.asarray(v) for k, v in batches.items()})
            return learn(batches, hp, **kw)

        algo.policy.learn_on_batches = record
        for _ in range(3):
            algo.train()
        real = algo.buffer.take(np.arange(len(algo.buffer)))[sb.OBS]
        imagined = algo.model_buffer.take(np.arange(len(algo.model_buffer)))[sb.OBS]
    assert seen, "SAC never learned"
    obs = seen[-1][sb.OBS]  # [steps, 20 rows, 3]
    assert obs.shape[1] == 20
    is_real = (obs[..., None, :] == real[None, None]).all(-1).any(-1)
    is_imagined = (obs[..., None, :] == imagined[None, None]).all(-1).any(-1)
    assert is_real[:, :5].all() and is_imagined[:, 5:].all()  # real_ratio 0.25 of 20 rows: the first 5


def test_terminated_steps_have_no_bootstrap_weight_in_the_model():
    with unirl.build("MBPO", dict(TINY)) as algo:
        batch = sb.SampleBatch({sb.OBS: np.zeros((3, 2, 3), np.float32), sb.ACTIONS: np.zeros((3, 2, 1), np.float32),
                                sb.REWARDS: np.zeros((3, 2), np.float32),
                                sb.TERMINATEDS: np.array([[0, 0], [1, 0], [0, 0]], bool),
                                sb.TRUNCATEDS: np.zeros((3, 2), bool),
                                sb.BOOTSTRAP_OBS: np.ones((2, 3), np.float32),
                                sb.TRUNC_INDEX: np.zeros(0, np.int64), sb.TRUNC_OBS: np.zeros((0, 3), np.float32),
                                sb.EP_KEYS: np.zeros(0, np.int64), sb.EP_RETURNS: np.zeros(0),
                                sb.EP_LENGTHS: np.zeros(0, np.int64)})
        rows = algo.postprocess(batch)
        assert rows[DELTA].shape == (6, 3)
        assert not rows[BOOTSTRAP][2].any()  # step 1 of env 0 terminated
        assert rows[BOOTSTRAP][[0, 1, 3, 4, 5]].sum() > 0


@pytest.mark.timeout(300)
def test_worker_counts_and_backends_give_the_same_bits():
    one = digest_after(5, num_workers=1, num_envs_per_worker=4)
    two = digest_after(5, num_workers=2, num_envs_per_worker=2)
    mp = digest_after(5, num_workers=4, num_envs_per_worker=1, backend="multiprocessing")
    assert one == two == mp
    assert digest_after(5, num_workers=1, num_envs_per_worker=4, real_ratio=0.5) != one  # the digest can tell


@pytest.mark.timeout(300)
def test_resume_is_exact_with_the_model_and_its_buffer(tmp_path):
    with unirl.build("MBPO", dict(TINY)) as algo:
        for _ in range(3):
            algo.train()
        path = algo.save(str(tmp_path / "ckpt"))
        for _ in range(3):
            algo.train()
        expected = algo.weights_digest()
        model_rows = len(algo.model_buffer)
    resumed = unirl.restore(path, resume=True)
    try:
        assert len(resumed.model_buffer) == 40 and resumed.model_phase == 1
        for _ in range(3):
            resumed.train()
        assert len(resumed.model_buffer) == model_rows
        assert resumed.weights_digest() == expected
    finally:
        resumed.stop()


def test_no_config_field_hides_a_config_property():
    """A field named like a property of the base config (`rollout_length`, `num_envs`) would silently change
    what the execution patterns read."""
    import dataclasses

    from unirl.config import AlgorithmConfig
    from unirl.registry import ALGORITHMS

    properties = {k for k, v in vars(AlgorithmConfig).items() if isinstance(v, property)}
    assert "rollout_length" in properties
    for name in ALGORITHMS:
        fields = {f.name for f in dataclasses.fields(unirl.get_algorithm_class(name).config_class)}
        assert not fields & properties, (name, fields & properties)


def test_config_errors_are_one_sentence():
    with pytest.raises(UnirlError, match="`n_step` must be 1"):
        unirl.build("MBPO", dict(TINY, n_step=3))
    with pytest.raises(UnirlError, match="multiple of `ensemble_size`"):
        unirl.build("MBPO", dict(TINY, rollout_batch_size=21))
    with pytest.raises(UnirlError, match="discrete ones"):
        unirl.build("MBPO", dict(TINY, env="CartPole-v1"))


@pytest.mark.timeout(600)
def test_quick_conformance_slice():
    """Levels 3 (worker counts 1-4, bit for bit) and 4 (torch against jax: the model's and SAC's losses and
    gradients, checkpoint actions, learning curves) for PETS and MBPO."""
    from unirl.conformance.report import FAILED
    from unirl.conformance.runner import SuiteOptions, run_suite

    algos = ("PETS", "MBPO")
    report = run_suite(SuiteOptions(algos=list(algos), frameworks=["torch", "jax"], backends=["local"], quick=True,
                                    levels=(3, 4)))
    failed = [f"{r.algo} L{r.level} {r.check} {r.framework}: {r.message}" for r in report.results if r.status == FAILED]
    assert not failed, failed
    for algo in algos:
        assert report.cell(algo, "jax", "local", 3) == "pass"
        assert report.cell(algo, "jax", "local", 4) == "pass"


def test_a_learned_reward_scores_imagined_steps():
    with unirl.build("MBPO", dict(TINY, learn_reward=True)) as algo:
        assert algo.reward_fn is None and algo.model.module.reward_head
        for _ in range(3):
            algo.train()
        rows = algo.model_buffer.take(np.arange(len(algo.model_buffer)))
        env = pendulum_reward(rows[sb.OBS], algo.policy.dist.env_actions(rows[sb.ACTIONS]), rows[NEXT_OBS])
        assert not np.allclose(rows[sb.REWARDS], env)  # the model's rewards, not the env's formula
        assert np.all(rows[sb.REWARDS] < 2.0) and np.mean(rows[sb.REWARDS]) < -0.5  # in Pendulum's range (<= 0)


@pytest.mark.timeout(300)
def test_the_model_learns_pendulums_dynamics():
    """A short run (600 env steps, few SAC steps): the ensemble's mean predictions of s' - s on fresh Pendulum
    transitions have under a tenth of the squared error of predicting no change."""
    import gymnasium as gym

    from unirl.dynamics import predict_by_member

    cfg = dict(TINY, framework="jax", train_batch_size=100, num_envs_per_worker=4, learning_starts=200,
               model_train_freq=100, training_intensity=0.1, model_training_intensity=2.0, model_batch_size=64,
               dynamics_model={"hidden_sizes": [64, 64], "activation": "swish"})
    with unirl.build("MBPO", cfg) as algo:
        while algo.timesteps_total < 600:
            algo.train()
        env = gym.make("Pendulum-v1")
        rng = np.random.default_rng(0)
        obs, _ = env.reset(seed=123)
        rows = []
        for _ in range(200):
            a = rng.uniform(-1, 1, 1).astype(np.float32)  # the policy's [-1, 1] scale; the env's is [-2, 2]
            nxt, _, _, trunc, _ = env.step(algo.policy.dist.env_actions(a[None])[0])
            rows.append((obs, a, nxt - obs))
            obs = env.reset()[0] if trunc else nxt
        o, a, d = (np.array([r[i] for r in rows], np.float32) for i in range(3))
        mean, _ = predict_by_member(algo.model, o, a)
    model_err = float(np.mean((mean[:, :3] - d) ** 2))
    zero_err = float(np.mean(d ** 2))
    assert model_err < 0.1 * zero_err, (model_err, zero_err)
