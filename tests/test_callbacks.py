"""Callbacks in the Python API: on_train_result, on_episode_end, on_checkpoint, run on the driver."""
import os

import numpy as np
import pytest

import unirl
from unirl.errors import UnirlError


class Recorder(unirl.Callbacks):
    def __init__(self):
        self.episodes, self.results, self.checkpoints = [], [], []
        self.pid = os.getpid()

    def on_episode_end(self, algorithm, episode_return, episode_length):
        assert os.getpid() == self.pid  # the driver
        self.episodes.append((episode_return, episode_length, algorithm.iteration))

    def on_train_result(self, algorithm, result):
        self.results.append(dict(result))
        result["custom/episodes_seen"] = len(self.episodes)

    def on_checkpoint(self, algorithm, path):
        assert os.path.exists(os.path.join(path, "weights.npz")) and os.path.exists(os.path.join(path, "state.json"))
        self.checkpoints.append((path, algorithm.iteration))


def test_hooks_see_every_episode_result_and_checkpoint(tiny_ppo, tmp_path):
    rec = Recorder()
    algo = unirl.build("PPO", tiny_ppo, callbacks=rec)
    try:
        results = [algo.train() for _ in range(4)]
        path = algo.save(str(tmp_path / "ck"))
    finally:
        algo.stop()
    # every finished episode, once, in the order the results list them, during its own iteration
    assert len(rec.episodes) == results[-1]["episodes_total"] > 0
    assert [r for r, _, _ in rec.episodes] == [x for res in results for x in res["episode_returns_this_iter"]]
    assert all(ret == length for ret, length, _ in rec.episodes)  # CartPole: reward 1 per step
    per_iter = [sum(1 for *_, it in rec.episodes if it == i) for i in range(4)]
    assert per_iter == [r["episodes_this_iter"] for r in results]
    # on_train_result got each result, and what it added is in the returned result
    assert [r["iteration"] for r in rec.results] == [1, 2, 3, 4]
    assert [r["custom/episodes_seen"] for r in results] == [r["episodes_total"] for r in results]
    assert rec.checkpoints == [(path, 4)]


def test_callbacks_do_not_change_training(tiny_ppo):
    plain = unirl.build("PPO", tiny_ppo)
    hooked = unirl.build("PPO", tiny_ppo, callbacks=[Recorder, Recorder()])
    try:
        for _ in range(2):
            a, b = plain.train(), hooked.train()
        assert a["weights_digest"] == b["weights_digest"]
        assert len(hooked.callbacks.callbacks) == 2
        assert all(len(c.results) == 2 for c in hooked.callbacks.callbacks)
    finally:
        plain.stop()
        hooked.stop()


def test_restore_and_from_checkpoint_take_callbacks(tiny_ppo, tmp_path):
    algo = unirl.build("PPO", tiny_ppo)
    algo.train()
    path = algo.save(str(tmp_path / "ck"))
    algo.stop()
    rec = Recorder()
    restored = unirl.restore(path, callbacks=rec)
    try:
        restored.train()
        assert [r["iteration"] for r in rec.results] == [2]
    finally:
        restored.stop()


def test_bad_callbacks_are_one_sentence(tiny_ppo):
    with pytest.raises(UnirlError, match="callbacks must be a unirl.Callbacks"):
        unirl.build("PPO", tiny_ppo, callbacks=lambda *a: None)


@pytest.mark.timeout(240)
def test_episodes_from_worker_processes_reach_the_driver(tiny_ppo):
    local, mp = Recorder(), Recorder()
    cfg = dict(tiny_ppo, num_envs_per_worker=2, train_batch_size=64)
    a = unirl.build("PPO", dict(cfg, num_workers=2), callbacks=local)
    b = unirl.build("PPO", dict(cfg, num_workers=2, backend="multiprocessing"), callbacks=mp)
    try:
        for _ in range(3):
            a.train()
            b.train()
    finally:
        a.stop()
        b.stop()
    assert len(mp.episodes) > 0 and mp.episodes == local.episodes
    assert np.isfinite([r for r, _, _ in mp.episodes]).all()
