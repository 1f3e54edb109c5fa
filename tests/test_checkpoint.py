"""Checkpoints: framework-free .npz names, exact round trip of weights, optimizer and counters."""
import json
import os

import numpy as np
import pytest

import unirl


def test_checkpoint_round_trip(tmp_path, tiny_ppo):
    algo = unirl.build("PPO", tiny_ppo)
    for _ in range(3):
        algo.train()
    path = algo.save(str(tmp_path / "ck"))
    with np.load(os.path.join(path, "weights.npz")) as z:
        names = set(z.files)
    assert "params/pi/0/w" in names and "params/vf/out/b" in names and "opt/1/mu" in names and "opt/1/count" in names
    assert not any("torch" in n or "tf" in n or "jax" in n for n in names)
    state = json.load(open(os.path.join(path, "state.json")))
    assert state["iteration"] == 3 and state["timesteps_total"] == 3 * 64 and state["algorithm"] == "PPO"

    restored = unirl.restore(path)
    try:
        a, b = algo.policy.get_state(), restored.policy.get_state()
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert restored.iteration == 3 and restored.timesteps_total == algo.timesteps_total
        assert restored.learner_rng.bit_generator.state == algo.learner_rng.bit_generator.state
        obs = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
        np.testing.assert_array_equal(algo.compute_actions(obs), restored.compute_actions(obs))
        # Training goes on from the restored optimizer state: one more learner step on the same
        # batch gives the same weights in both.
        rows = algo.postprocess(algo.sampler.sample(algo.policy.get_flat_weights()))
        keys = ["obs", "actions", "action_logp", "advantages", "value_targets"]
        for x in (algo, restored):
            x.policy.learn_on_batch({k: rows[k] for k in keys}, x.hyperparameters())
        np.testing.assert_array_equal(algo.policy.get_flat_weights(), restored.policy.get_flat_weights())
    finally:
        algo.stop()
        restored.stop()


def test_restore_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(unirl.UnirlError, match="no checkpoint at"):
        unirl.restore(str(tmp_path / "nothing"))
