"""Ape-X's defaults adapt to the number of actors: with 4 actors in their own processes (more than the cores of a
small machine), the learner still takes at least `training_intensity` gradient steps per env step past
`learning_starts` (config `min_training_intensity` defaults to it), so its target network syncs every
`target_network_update_freq` x `training_intensity` learner steps, not every few (issue 29: with a free-running learner
the defaults diverged, mean Q in the millions)."""
import pytest

import unirl


@pytest.mark.timeout(300)
def test_the_default_learner_holds_the_replay_ratio_with_four_actors():
    with unirl.build("APEX", {"env": "CartPole-v1", "backend": "multiprocessing", "num_workers": 4, "seed": 0}) as algo:
        c = algo.config
        assert c.min_training_intensity == c.training_intensity > 0
        while algo.timesteps_total < c.learning_starts + 3000:
            result = algo.train()
    # the floor is checked before each actor result is consumed, so one iteration's steps may be owed
    owed = c.training_intensity * (result["timesteps_total"] - c.learning_starts - c.train_batch_size)
    assert int(owed) <= result["learner/grad_steps"] <= c.training_intensity * result["timesteps_total"]
    assert result["learner/value_diverging"] is False
