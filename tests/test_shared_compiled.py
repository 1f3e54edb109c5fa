"""Policies built from the same ingredients share their compiled functions (unirl.policy): a new policy
neither retraces nor changes a bit; other ingredients get functions of their own."""
import pytest

pytest.importorskip("jax")

import unirl  # noqa: E402
import unirl.policy  # noqa: E402

CONFIG = {"env": "CartPole-v1", "framework": "jax", "train_batch_size": 256, "minibatch_size": 64, "num_epochs": 2}


def _digest(config: dict, iterations: int = 2):
    algo = unirl.build("PPO", config)
    try:
        for _ in range(iterations):
            algo.train()
        p = algo.policy
        return algo.weights_digest(), p._learn_steps, p.adapter.trace_count(p._learn_steps)
    finally:
        algo.stop()


@pytest.mark.timeout(300)
def test_a_second_policy_reuses_the_compiled_steps_with_the_same_bits():
    unirl.policy.clear_compiled()
    cold, steps, traces = _digest(dict(CONFIG, seed=1))
    assert traces == 1
    # Another seed (other weights, the same ingredients): the same compiled function, not traced again.
    _, steps_again, traces_again = _digest(dict(CONFIG, seed=2))
    assert steps_again is steps and traces_again == 1
    # The first seed again, now through the shared function: the bits of the run that traced it.
    warm, _, _ = _digest(dict(CONFIG, seed=1))
    assert warm == cold
    # Other ingredients (a smaller network, another clip) compile their own.
    _, other_steps, _ = _digest(dict(CONFIG, seed=1, model={"hidden_sizes": [32, 32]}))
    assert other_steps is not steps
    _, clipped_steps, _ = _digest(dict(CONFIG, seed=1, grad_clip=0.25))
    assert clipped_steps is not steps
    unirl.policy.clear_compiled()
    _, fresh_steps, fresh_traces = _digest(dict(CONFIG, seed=1))
    assert fresh_steps is not steps and fresh_traces == 1


def test_the_shared_cache_keeps_its_newest_entries(monkeypatch):
    from unirl.policy import _SHARED_COMPILED

    unirl.policy.clear_compiled()
    monkeypatch.setattr(unirl.policy, "SHARED_COMPILED_MAX", 3)
    keys = []
    for width in (8, 16):
        algo = unirl.build("PPO", dict(CONFIG, model={"hidden_sizes": [width]}))
        algo.stop()
        keys.append(list(_SHARED_COMPILED))
    # A policy compiles three functions when built (unflatten, policy_out, forward): the second
    # network's three pushed the first's out, oldest first.
    assert len(keys[1]) == 3 and keys[0] != keys[1]
    assert not set(keys[1]) & set(keys[0])
