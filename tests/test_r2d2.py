"""R2D2: the value rescaling and its inverse, sequence priorities, n-step targets inside a sequence, stored states
that reproduce the actor's Q-values, a burn-in without gradient, a replayed schedule bit for bit, learning, errors."""
import numpy as np
import pytest

import unirl
from unirl import sample_batch as sb
from unirl.algorithms.dqn import DISCOUNTS
from unirl.algorithms.r2d2 import (BOOTSTRAP_STEPS, BURN_IN_OBS, BURN_IN_RESETS, MASK, actor_rows, n_step_targets,
                                   sequence_priorities, sequence_q, value_rescale, value_rescale_inverse)
from unirl.errors import UnirlError
from unirl.ops import numpy_ops
from unirl.recurrent import STATES, step_states
from unirl.replay import WEIGHTS


def r2d2_config(backend="local", **extra):
    config = {"env": "unirl/StatelessCartPole-v1", "framework": "torch", "backend": backend, "seed": 3,
              "num_workers": 2, "num_envs_per_worker": 2, "train_batch_size": 64, "learning_starts": 64,
              "replay_batch_size": 8, "training_intensity": 0.05, "target_network_update_freq": 128,
              "num_replay_shards": 2, "weight_sync_period": 2, "replay_buffer_capacity": 500, "burn_in": 3,
              "model": {"hidden_sizes": [16], "activation": "relu", "lstm_cell_size": 8, "max_seq_len": 8}}
    config.update(extra)
    return config


@pytest.mark.timeout(30)
def test_value_rescaling_matches_hand_values_and_its_inverse_undoes_it():
    eps = 1e-3
    x = np.array([0.0, 3.0, -8.0, 99.0, -0.44], np.float64)
    want = np.array([0.0, 1.0 + 3 * eps, -2.0 - 8 * eps, 9.0 + 99 * eps, -(np.sqrt(1.44) - 1.0) - 0.44 * eps])
    np.testing.assert_allclose(value_rescale(numpy_ops, x, eps), want, rtol=1e-12, atol=1e-15)
    grid = np.concatenate([-np.logspace(-6, 4, 200), [0.0], np.logspace(-6, 4, 200)])
    np.testing.assert_allclose(value_rescale_inverse(numpy_ops, value_rescale(numpy_ops, grid, eps), eps), grid,
                               rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(value_rescale(numpy_ops, value_rescale_inverse(numpy_ops, grid, eps), eps), grid,
                               rtol=1e-8, atol=1e-9)


@pytest.mark.timeout(30)
def test_a_sequence_priority_mixes_the_max_and_the_mean_of_its_td_errors():
    abs_td = np.array([[1.0, 3.0, 2.0, 7.0], [5.0, 1.0, 1.0, 1.0], [0.5, 0.0, 0.0, 0.0]])
    mask = np.array([[1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    got = sequence_priorities(numpy_ops, abs_td, mask, 0.9)
    np.testing.assert_allclose(got, [0.9 * 3 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 0.5 + 0.1 * 0.5], rtol=1e-12)
    np.testing.assert_allclose(sequence_priorities(numpy_ops, abs_td, mask, 0.0), [2.0, 1.0, 0.5], rtol=1e-12)


@pytest.mark.timeout(30)
def test_n_step_targets_stop_at_episode_ends_and_at_the_sequence_end():
    g = 0.5
    r = np.array([[1.0, 2.0, 4.0, 8.0, 16.0, 32.0]], np.float32)
    term = np.array([[False, False, True, False, False, False]])
    trunc = np.array([[False, False, False, False, True, False]])
    ret, disc, boot, mask = n_step_targets(r, term, trunc, g, 2)
    # t=0: r0 + g r1, bootstrap from 2 (gamma^2); t=1: r1 + g r2 and step 2 is terminal: no bootstrap;
    # t=2: r2 terminal; t=3: r3, then step 4 is truncated (its successor is not in the sequence): bootstrap from 4;
    # t=4: truncated, no target; t=5: the sequence's last step, no target
    np.testing.assert_allclose(ret[0], [1 + g * 2, 2 + g * 4, 4, 8, 0, 0])
    np.testing.assert_allclose(disc[0], [g ** 2, 0, 0, g, 1, 1])
    assert boot[0].tolist()[:4] == [2, 1, 2, 4] and boot[0][4] == 4 and boot[0][5] == 5
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0]


def actor_and_batch(algo):
    """An actor of a local run and one batch it sampled, with the states and Q-values replayed from it."""
    actor = algo.backend._workers[algo.pattern.actors[0].worker_id]
    batch = actor.sample(None, **actor.explore)
    batch[STATES], batch[sb.BEHAVIOUR_INPUTS] = step_states(actor.policy, batch)
    return actor, batch


@pytest.mark.timeout(60)
def test_stored_states_give_back_the_q_values_the_actor_acted_on():
    algo = unirl.build("R2D2", r2d2_config(burn_in=0, model={"hidden_sizes": [16], "activation": "relu",
                                                             "lstm_cell_size": 8, "max_seq_len": 8}))
    try:
        actor, batch = actor_and_batch(algo)
        rows = actor_rows(batch, algo.config)
        # 16 steps per env, sequences of 8 starting every 4 steps: 3 per env, each step in up to 2 of them
        assert rows[sb.OBS].shape[:2] == (2 * 3, 8) and rows[sb.STATE_IN].shape == (6, 16)
        np.testing.assert_array_equal(rows[sb.OBS][1, :4], rows[sb.OBS][0, 4:])
        assert (rows[sb.RESETS][:, 0] == 0).all()
        params = actor.policy.get_weights()
        q = sequence_q(numpy_ops, actor.policy.module, params, rows)
        np.testing.assert_allclose(q, rows[sb.BEHAVIOUR_INPUTS], rtol=1e-5, atol=1e-6)
    finally:
        algo.stop()


def _flat_grad(policy, rows):
    hp = {"lr": 1e-3, "huber_delta": 1.0, "double_q": 1.0, "value_rescaling_eps": 1e-3, "priority_eta": 0.9}
    grad, stats = policy.compute_gradients(rows, hp)
    return grad, stats["total_loss"]


@pytest.mark.timeout(60)
def test_the_burn_in_only_refreshes_the_state_and_gets_no_gradient():
    algo = unirl.build("R2D2", r2d2_config())
    try:
        actor, batch = actor_and_batch(algo)
        rows = actor_rows(batch, algo.config)
        rows.pop(sb.BEHAVIOUR_INPUTS)
        rows[WEIGHTS] = np.ones(len(rows[sb.OBS]), np.float32)
        policy = algo.policy
        grad, loss = _flat_grad(policy, rows)
        assert np.abs(grad).max() > 0
        # the same loss from the state after the burn-in, given as the stored state: the same gradient, so none
        # flows into the burn-in
        module = policy.module
        s, b = rows[BURN_IN_OBS].shape[:2]
        _, after = module.cell_sequences(numpy_ops, policy.get_weights(), rows[BURN_IN_OBS].reshape(s * b, -1),
                                         rows[sb.STATE_IN], rows[BURN_IN_RESETS].reshape(-1))
        no_burn = {k: v for k, v in rows.items() if k not in (BURN_IN_OBS, BURN_IN_RESETS)}
        no_burn[sb.STATE_IN] = after.astype(np.float32)
        grad2, loss2 = _flat_grad(policy, no_burn)
        np.testing.assert_allclose(loss2, loss, rtol=1e-5)
        np.testing.assert_allclose(grad2, grad, rtol=1e-4, atol=1e-6)
        # the burn-in does matter: through the state it leaves
        moved = dict(rows, **{BURN_IN_OBS: rows[BURN_IN_OBS] + 0.5})
        assert _flat_grad(policy, moved)[1] != loss
        # and the burn-in steps' rewards are not even stored
        assert rows[sb.REWARDS].shape[1] == 8 - 3 and rows[DISCOUNTS].shape == rows[MASK].shape
        assert rows[BOOTSTRAP_STEPS].min() >= 0 and rows[BOOTSTRAP_STEPS].max() < 8 - 3
    finally:
        algo.stop()


def run_r2d2(backend, iterations, **extra):
    algo = unirl.build("R2D2", r2d2_config(backend, **extra))
    try:
        results = [algo.train() for _ in range(iterations)]
        weights = np.concatenate([algo.policy.get_flat_weights(), algo.policy.get_flat_weights("target_params")])
        return weights, algo.get_state()[1]["arrival_schedule"], results
    finally:
        algo.stop()


@pytest.mark.timeout(240)
def test_a_free_running_multiprocessing_run_replays_bit_for_bit_on_local():
    w, schedule, results = run_r2d2("multiprocessing", 6)
    last = results[-1]
    assert last["learner/grad_steps"] > 3 and last["learner/weight_syncs"] > 2 and np.isfinite(last["learner/total_loss"])
    assert sum(0 <= a < 2 for a in schedule) == 2 * 6 and schedule.count(2) == last["learner/grad_steps"]
    replayed, again, _ = run_r2d2("local", 6, arrival_schedule=schedule)
    assert again == schedule
    assert np.array_equal(w.view(np.uint32), replayed.view(np.uint32))


@pytest.mark.timeout(180)
def test_it_learns_on_stateless_cartpole():
    """A short run: the TD error falls as the values are learned, and the greedy policy outlasts the untrained one."""
    algo = unirl.build("R2D2", {"env": "unirl/StatelessCartPole-v1", "framework": "torch", "backend": "local",
                                "seed": 0, "learning_starts": 384})
    try:
        before = algo.evaluate(10)["evaluation/episode_return_mean"]
        results = [algo.train() for _ in range(12)]
        td = [r["learner/mean_td_error"] for r in results if "learner/mean_td_error" in r]
        assert len(td) >= 8 and np.mean(td[-3:]) < 0.5 * np.mean(td[:3]), td
        assert all(np.isfinite(r["learner/total_loss"]) for r in results if "learner/total_loss" in r)
        assert before < 30
    finally:
        algo.stop()


@pytest.mark.timeout(60)
def test_a_non_recurrent_model_or_a_burn_in_as_long_as_the_sequence_is_refused():
    with pytest.raises(UnirlError, match="lstm_cell_size"):
        unirl.build("R2D2", r2d2_config(model={"hidden_sizes": [16]}))
    with pytest.raises(UnirlError, match="burn_in"):
        unirl.build("R2D2", r2d2_config(burn_in=8))
    with pytest.raises(UnirlError, match="max_seq_len"):
        unirl.build("R2D2", r2d2_config(train_batch_size=4 * 12))
    with pytest.raises(UnirlError, match="does not learn with a recurrent model"):
        unirl.build("DQN", {"env": "unirl/StatelessCartPole-v1", "model": {"lstm_cell_size": 8}})
