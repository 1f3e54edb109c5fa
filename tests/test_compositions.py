"""Compositions on the execution patterns (Async DQN, APPO): every parameter set reaches the workers with its
version, a set never sent is an error, exploration settings are declared and checked, replacements get their own
worker's exploration, and the compositions replay bit for bit like the algorithms they are made of."""
import numpy as np
import pytest

import unirl
from unirl.errors import UnirlError

ADQN = {"env": "CartPole-v1", "framework": "torch", "seed": 3, "num_workers": 2, "num_envs_per_worker": 3,
        "rollout_fragment_length": 4, "train_batch_size": 48, "target_update_period": 2,
        "model": {"hidden_sizes": [16], "activation": "relu"}}
APPO = {"env": "CartPole-v1", "framework": "torch", "seed": 3, "num_workers": 2, "num_envs_per_worker": 3,
        "rollout_fragment_length": 4, "train_batch_size": 24}


def _run(algo, cfg, iterations=3):
    a = unirl.build(algo, cfg)
    try:
        for _ in range(iterations):
            r = a.train()
        return a.policy.get_flat_weights(), r, a.get_state()[1]
    finally:
        a.stop()


@pytest.mark.timeout(120)
def test_async_dqn_workers_learn_with_the_drivers_target_network():
    """On the local backend the workers are objects in this process: after training, each worker's target
    network is the driver's as last sent, and its reported versions are the driver's."""
    a = unirl.build("ASYNC_DQN", dict(ADQN, backend="local"))
    try:
        a.execution.audit = 1  # every gradient recomputed on the driver from the sets it sent
        for _ in range(3):
            a.train()
        assert a.policy.versions["target_params"] >= 3, a.policy.versions  # synced every 2 gradients
        assert a.execution.audited == 12 and a.execution.audit_findings == []
        driver_target = a.policy.get_flat_weights("target_params")
        initial_target = a.build_policy(a.config).get_flat_weights("target_params")
        assert not np.array_equal(driver_target, initial_target)
        workers = [a.backend._workers[h.worker_id] for h in a.execution.driver.workers]
        # the last request each worker got carried the driver's target as it then was: not the initial one
        for w in workers:
            assert not np.array_equal(w.policy.get_flat_weights("target_params"), initial_target)
            assert w.policy.versions["target_params"] >= 1
    finally:
        a.stop()


def test_a_worker_asked_for_a_set_it_was_never_sent_raises():
    from unirl.algorithms.async_dqn import AsyncDQN, async_dqn_rows
    from unirl.execution.async_gradients import GradientWorker
    from unirl.execution.loops import WorkerLearner

    a = unirl.build("ASYNC_DQN", dict(ADQN, backend="local", num_workers=1))
    try:
        spec = a.worker_specs()[0]
        spec.rollout_length = 4
        worker = GradientWorker(spec, WorkerLearner(AsyncDQN.loss, AsyncDQN.param_sets, async_dqn_rows, a.config))
        sets = {"params": a.policy.get_flat_weights()}
        with pytest.raises(UnirlError, match="parameter set `target_params`, which the driver never sent"):
            worker.compute_gradients(sets, {"params": 0}, a.hyperparameters(), {"epsilon": 0.1})
    finally:
        a.stop()


def test_a_pattern_that_would_not_send_a_set_the_loss_reads_is_refused():
    from unirl.algorithms.async_dqn import AsyncDQN, async_dqn_rows
    from unirl.execution import loops

    class OnlyParams(AsyncDQN):
        execution = loops.AsyncGradients(postprocess=async_dqn_rows, worker_sets=("params",))

    with pytest.raises(UnirlError, match="reads parameter set `target_params`.*does not send"):
        OnlyParams(dict(ADQN, backend="local"))


def test_exploration_options_are_declared_and_checked():
    from unirl.distributions import Categorical, EpsilonGreedy

    q = np.array([[0.0, 1.0]], np.float32)
    noise = np.array([[0.0, 0.0]])
    with pytest.raises(UnirlError, match=r"unknown exploration option `epsilom`.*Did you mean `epsilon`\?"):
        EpsilonGreedy(2).check_exploration({"epsilom": 0.1})
    with pytest.raises(UnirlError, match="need the exploration option `epsilon`"):
        EpsilonGreedy(2).check_exploration({})
    EpsilonGreedy(2).check_exploration({}, required=False)  # acting outside training: greedy by default
    with pytest.raises(UnirlError, match="unknown exploration option `epsilon` for Categorical actions"):
        Categorical(2).check_exploration({"epsilon": 0.1})
    assert EpsilonGreedy(2).sample_numpy(q, noise, epsilon=1.0)[0] == 0  # explores: the random action


def test_a_misspelt_exploration_option_fails_the_run():
    from unirl.algorithms.dqn import DQN

    class Misspelt(DQN):
        def exploration(self, worker_id=None):
            return {"epsilom": 0.5}

    a = Misspelt({"env": "CartPole-v1", "backend": "local", "learning_starts": 0})
    try:
        with pytest.raises(UnirlError, match="epsilom"):
            a.train()
    finally:
        a.stop()


def test_async_dqn_gives_each_worker_its_own_final_epsilon_and_a_replacement_the_same():
    a = unirl.build("ASYNC_DQN", dict(ADQN, backend="local", num_workers=4, exploration_timesteps=0))
    try:
        assert [a.exploration(w)["epsilon"] for w in range(4)] == [0.1, 0.01, 0.5, 0.1]
        a.execution._hp = a.hyperparameters()
        args, _ = a.execution.driver.replacement_args(2)
        assert args[3] == {"epsilon": 0.5}  # what a replaced worker 2 is sent: its own exploration
    finally:
        a.stop()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo,cfg", [("ASYNC_DQN", ADQN), ("APPO", APPO)])
def test_compositions_replay_bit_for_bit(algo, cfg):
    """Free-running on multiprocessing, replayed on local: the same weights, results and learner state."""
    w0, r0, s0 = _run(algo, dict(cfg, backend="multiprocessing"))
    w1, r1, s1 = _run(algo, dict(cfg, backend="local", arrival_schedule=s0["arrival_schedule"]))
    assert np.array_equal(w0.view(np.uint32), w1.view(np.uint32))
    assert r0["weights_digest"] == r1["weights_digest"]
    assert s0["arrival_schedule"] == s1["arrival_schedule"] and s0["weights_version"] == s1["weights_version"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("algo,score,budget", [("APPO", 150.0, 60_000)])
def test_composition_learns_with_its_defaults(algo, score, budget):
    a = unirl.build(algo, {"env": "CartPole-v1", "backend": "local", "seed": 0})
    try:
        best = 0.0
        while a.timesteps_total < budget and best < score:
            best = max(best, a.train()["episode_return_mean"])
        assert best >= score, f"{algo}: best training mean {best} within {a.timesteps_total} steps"
    finally:
        a.stop()


@pytest.mark.timeout(300)
def test_async_dqn_learns_with_its_defaults():
    """Local backend, seed 0, the defaults: a greedy evaluation every 25k env steps (the training mean is held
    down by the worker exploring with epsilon 0.5) reaches 150 within 150k steps (349 at 125k when recorded)."""
    a = unirl.build("ASYNC_DQN", {"env": "CartPole-v1", "backend": "local", "seed": 0})
    try:
        best, next_eval = 0.0, 25_000
        while a.timesteps_total < 150_000 and best < 150:
            a.train()
            if a.timesteps_total >= next_eval:
                next_eval += 25_000
                best = max(best, a.evaluate(5)["evaluation/episode_return_mean"])
        assert best >= 150, f"best greedy mean {best} within {a.timesteps_total} steps"
    finally:
        a.stop()


@pytest.mark.timeout(120)
def test_a_diverging_q_function_is_flagged_and_warned_about_once():
    """A DQN run whose Q-network is pushed far beyond what CartPole's rewards allow (100 at gamma 0.99): the result
    flags it and the run warns once, naming the keys that usually fix it."""
    import warnings

    from unirl.errors import UnirlWarning

    a = unirl.build("DQN", {"env": "CartPole-v1", "backend": "local", "learning_starts": 0,
                            "model": {"hidden_sizes": [16], "activation": "relu"}})
    try:
        r = a.train()
        assert r["learner/value_diverging"] is False and abs(r["learner/mean_q"]) < 100
        # the output layer's biases at 1e5: Q ~ 1e5, three orders beyond the largest possible return
        names = a.policy.layout.names
        weights = a.policy.get_weights()
        out_bias = [k for k in names if k.endswith("b")][-1]
        weights[out_bias] = weights[out_bias] + 1e5
        a.policy.set_weights(weights)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            r1, r2 = a.train(), a.train()
        assert r1["learner/value_diverging"] is True and r2["learner/value_diverging"] is True
        ours = [w for w in seen if issubclass(w.category, UnirlWarning)]
        assert len(ours) == 1 and "Q-values are diverging" in str(ours[0].message)
        assert "target_network_update_freq" in str(ours[0].message)
    finally:
        a.stop()
