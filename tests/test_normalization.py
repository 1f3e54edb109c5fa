"""Observation and reward normalisation: statistics on the learner from joined batches, frozen
copies inside the module's parameters, bit-identical across worker counts and backends, exact
checkpoint round trips."""
import numpy as np
import pytest

import unirl
from unirl import sample_batch as sb
from unirl.filters import RunningMeanStd
from unirl.normalization import OBS_MEAN, OBS_STD

TIME_FIELDS = ("time_this_iter_s", "time_total_s", "env_steps_per_s")
BASE = {"env": "Pendulum-v1", "framework": "torch", "seed": 2, "train_batch_size": 432, "minibatch_size": 144,
        "num_epochs": 2, "gamma": 0.9, "gae_lambda": 0.95, "lr": 1e-3,
        "normalize_observations": True, "normalize_rewards": True}


def run(backend="local", num_workers=1, iterations=3, total_envs=6, **extra):
    cfg = dict(BASE, backend=backend, num_workers=num_workers, num_envs_per_worker=total_envs // num_workers, **extra)
    algo = unirl.build("PPO", cfg)
    try:
        results = [{k: v for k, v in algo.train().items() if k not in TIME_FIELDS} for _ in range(iterations)]
        return algo.policy.get_flat_weights(), results
    finally:
        algo.stop()


def assert_same(ref, other, label):
    assert ref[0].tobytes() == other[0].tobytes(), f"{label}: weights differ"
    for a, b in zip(ref[1], other[1]):
        for k in a:
            x, y = np.asarray(a[k]), np.asarray(b[k])
            same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else np.array_equal(x, y)
            assert same, f"{label}: {k} differs"


@pytest.fixture(scope="module")
def reference():
    return run()


@pytest.mark.timeout(300)
def test_statistics_come_from_the_joined_batches_and_reach_the_weights():
    algo = unirl.build("PPO", dict(BASE, num_envs_per_worker=6))
    seen_obs, seen_rewards = [], []
    original = algo.sampler.sample

    def spy(*args, **kwargs):
        batch = original(*args, **kwargs)
        seen_obs.append(batch[sb.OBS].copy())
        seen_rewards.append(batch[sb.REWARDS].copy())
        return batch

    algo.sampler.sample = spy
    try:
        w0 = algo.policy.get_weights()
        np.testing.assert_array_equal(w0[OBS_MEAN], 0)
        np.testing.assert_array_equal(w0[OBS_STD], 1)
        for _ in range(2):
            algo.train()
        rms = RunningMeanStd((3,))
        for o in seen_obs:
            rms.update(o.reshape(-1, 3))
        w = algo.policy.get_weights()
        np.testing.assert_array_equal(w[OBS_MEAN], rms.mean.astype(np.float32))
        np.testing.assert_array_equal(w[OBS_STD], np.sqrt(rms.var + 1e-8).astype(np.float32))
        # rewards: divided by the running std of each env's discounted return (gamma 0.9), as VecNormalize
        returns, ret_rms = np.zeros(6), RunningMeanStd(())
        for r in seen_rewards:
            seen = []
            for t in range(len(r)):
                returns = returns * 0.9 + r[t]
                seen.append(returns.copy())
            ret_rms.update(np.concatenate(seen))
        np.testing.assert_allclose(algo.normalizers.ret_rms.var, ret_rms.var, rtol=1e-12)
    finally:
        algo.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("num_workers", (2, 3))
def test_local_worker_counts(reference, num_workers):
    assert_same(reference, run("local", num_workers), f"local/{num_workers}")


@pytest.mark.timeout(300)
def test_multiprocessing(reference):
    assert_same(reference, run("multiprocessing", 2), "multiprocessing/2")


@pytest.mark.timeout(300)
def test_checkpoint_round_trip(tmp_path):
    """The float64 statistics and return accumulators come back exactly; the same next batch is
    then normalised to the same bits and learned on to the same weights."""
    a = unirl.build("PPO", dict(BASE, num_envs_per_worker=6))
    try:
        a.train()
        a.train()
        b = unirl.restore(a.save(str(tmp_path / "ckpt")))
        try:
            sa, sb_ = a.normalizers.get_state(), b.normalizers.get_state()
            assert sa.keys() == sb_.keys() and "norm/obs/m2" in sa
            for k in sa:
                np.testing.assert_array_equal(sa[k], sb_[k], err_msg=k)
            assert a.policy.get_flat_weights().tobytes() == b.policy.get_flat_weights().tobytes()
            batch = a.sampler.sample(a.policy.get_flat_weights())
            copies = [sb.SampleBatch({k: v.copy() for k, v in batch.items()}) for _ in range(2)]
            for algo, x in zip((a, b), copies):
                algo.normalizers.process(x)
                algo.normalizers.sync()
                rows = algo.postprocess(x)
                algo.policy.learn_on_batch({k: rows[k][:144] for k in (sb.OBS, sb.ACTIONS, sb.LOGP, sb.ADVANTAGES,
                                                                       sb.VALUE_TARGETS)}, algo.hyperparameters())
            np.testing.assert_array_equal(copies[0][sb.REWARDS], copies[1][sb.REWARDS])
            assert a.policy.get_flat_weights().tobytes() == b.policy.get_flat_weights().tobytes()
        finally:
            b.stop()
    finally:
        a.stop()


def test_policy_modules_refuse_it():
    with pytest.raises(unirl.UnirlError, match="observation filter"):
        unirl.build("ES", {"env": "Pendulum-v1", "normalize_observations": True})


@pytest.mark.parametrize("algo", ["A3C", "APEX"])
def test_algorithms_whose_batches_skip_the_driver_refuse_normalization(algo):
    from unirl.errors import UnirlError

    with pytest.raises(UnirlError, match=f"{algo} does not support normalize_observations or normalize_rewards"):
        unirl.build(algo, {"normalize_observations": True})
