"""Checkpoints are whole or absent, the latest is found by iteration number, a damaged one falls back to the
previous whole one, and a crafted checkpoint cannot make unirl import or run anything (real processes)."""
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import unirl
from unirl.checkpoint import (CheckpointError, list_checkpoints, load_latest, prune_checkpoints, read_checkpoint,
                              save_checkpoint)
from conftest import REPO, run_cli

pytestmark = pytest.mark.timeout(600)


def _arrays(i):
    return {"a": np.full((1000, 100), i, np.float32), "b": np.arange(i + 1)}


def test_save_is_atomic_and_cleans_leftovers(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    stale = ck / ".tmp-checkpoint_000007-999999999"  # a save killed midway (its pid is gone)
    stale.mkdir()
    (stale / "weights.npz").write_bytes(b"partial")
    path = save_checkpoint(str(ck / "checkpoint_000001"), _arrays(1), {"iteration": 1})
    assert sorted(os.listdir(ck)) == ["checkpoint_000001"]
    assert sorted(os.listdir(path)) == ["state.json", "weights.npz"]
    # Overwriting a checkpoint replaces it whole; a folder with other files is never clobbered.
    save_checkpoint(path, _arrays(2), {"iteration": 2})
    assert read_checkpoint(path)[1]["iteration"] == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(unirl.UnirlError, match="holds other files"):
        save_checkpoint(str(tmp_path / "mine"), _arrays(3), {"iteration": 3})
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_latest_is_by_iteration_number_and_keep_num(tmp_path):
    ck = tmp_path / "checkpoints"
    for it in (999999, 1000000, 5, 42):
        save_checkpoint(str(ck / f"checkpoint_{it:06d}"), _arrays(it % 7), {"iteration": it})
    folder, _, state = load_latest(str(tmp_path))
    assert state["iteration"] == 1000000 and folder.endswith("checkpoint_1000000")
    removed = prune_checkpoints(str(tmp_path), 2)
    assert len(removed) == 2
    assert [it for it, _ in list_checkpoints(str(tmp_path))] == [999999, 1000000]


@pytest.mark.parametrize("damage", ["truncate_weights", "garbage_state", "missing_weights"])
def test_damaged_checkpoint_falls_back_with_one_line(tmp_path, damage):
    for it in (1, 2):
        save_checkpoint(str(tmp_path / "checkpoints" / f"checkpoint_{it:06d}"), _arrays(it), {"iteration": it})
    bad = tmp_path / "checkpoints" / "checkpoint_000002"
    if damage == "truncate_weights":
        data = (bad / "weights.npz").read_bytes()
        (bad / "weights.npz").write_bytes(data[: len(data) // 2])
        bad_file = bad / "weights.npz"
    elif damage == "garbage_state":
        (bad / "state.json").write_text("{not json")
        bad_file = bad / "state.json"
    else:
        (bad / "weights.npz").unlink()
        bad_file = bad / "weights.npz"
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(str(bad))
    assert str(bad_file) in str(e.value) and "\n" not in str(e.value)
    said = []
    folder, arrays, state = load_latest(str(tmp_path), say=said.append)
    assert state["iteration"] == 1 and folder.endswith("checkpoint_000001")
    assert len(said) == 1 and str(bad_file) in said[0] and "falling back" in said[0]


def test_evaluate_falls_back_from_a_damaged_checkpoint(tmp_path, tiny_ppo):
    algo = unirl.build("PPO", tiny_ppo)
    try:
        algo.train()
        algo.save(str(tmp_path / "checkpoints" / "checkpoint_000001"))
        algo.train()
        algo.save(str(tmp_path / "checkpoints" / "checkpoint_000002"))
    finally:
        algo.stop()
    w = tmp_path / "checkpoints" / "checkpoint_000002" / "weights.npz"
    w.write_bytes(w.read_bytes()[:100])
    r = run_cli("evaluate", str(tmp_path), "--episodes", "1", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert f"checkpoint file `{w}` is damaged" in r.stderr and "falling back" in r.stderr
    assert "mean return" in r.stdout


WRITER = r"""
import sys, numpy as np
from unirl.checkpoint import save_checkpoint, checkpoint_name
out = sys.argv[1]
arrays = {"w%d" % i: np.random.default_rng(i).standard_normal((300, 300)) for i in range(6)}
i = 0
while True:
    i += 1
    save_checkpoint(f"{out}/checkpoints/{checkpoint_name(i)}", arrays, {"iteration": i}, worker_state=b"x" * 100000)
"""


def test_driver_sigkill_while_saving_never_leaves_a_partial_checkpoint(tmp_path):
    rng = random.Random(0)
    for k in range(8):
        out = tmp_path / f"run{k}"
        p = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], cwd=REPO)
        deadline = time.monotonic() + 60
        while not (out / "checkpoints").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3 + rng.random() * 0.7)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
        for it, folder in list_checkpoints(str(out)):
            arrays, state = read_checkpoint(folder)  # every checkpoint that exists is whole
            assert state["iteration"] == it and len(arrays) == 6
        assert list_checkpoints(str(out)), "no checkpoint was written"
        # The next save removes what the killed one left.
        save_checkpoint(str(out / "checkpoints" / "checkpoint_999999"), _arrays(0), {"iteration": 999999})
        assert not [n for n in os.listdir(out / "checkpoints") if n.startswith(".")]


# -- untrusted checkpoints ------------------------------------------------------------------------

def _crafted(tmp_path, tiny_ppo, **state_changes):
    algo = unirl.build("PPO", tiny_ppo)
    try:
        path = algo.save(str(tmp_path / "ck"))
    finally:
        algo.stop()
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    for k, v in state_changes.items():
        if k in ("backend", "backend_options", "env", "framework", "model"):
            state["config"][k] = v
        else:
            state[k] = v
    (tmp_path / "ck" / "state.json").write_text(json.dumps(state))
    return path


@pytest.mark.parametrize("change", ["backend", "algorithm", "env", "framework", "custom_module"])
def test_crafted_state_json_is_refused_without_running_anything(tmp_path, tiny_ppo, change):
    marker = tmp_path / "PWNED"
    cmd = [sys.executable, "-c", f"open({str(marker)!r}, 'w').write('ran')"]
    changes = {
        "backend": {"backend": "subprocess:Popen", "backend_options": {"args": cmd}},
        "algorithm": {"algorithm": "subprocess:Popen"},
        "env": {"env": "antigravity:CartPole-v1"},
        "framework": {"framework": "subprocess:Popen"},
        "custom_module": {"model": {"custom_module": "subprocess:Popen"}},
    }[change]
    path = _crafted(tmp_path, tiny_ppo, **changes)
    before = set(sys.modules)
    with pytest.raises(unirl.UnirlError, match="refusing to load"):
        unirl.restore(path)
    with pytest.raises(unirl.UnirlError, match="refusing to load"):
        unirl.get_algorithm_class("PPO").from_checkpoint(path)
    time.sleep(0.5)
    assert not marker.exists()
    assert "antigravity" not in set(sys.modules) - before
    r = run_cli("evaluate", path, "--episodes", "1", timeout=300)
    assert r.returncode == 2 and "refusing to load" in r.stderr and not marker.exists()


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_foreign_worker_state_is_not_unpickled(tmp_path, tiny_ppo):
    marker = tmp_path / "PWNED"
    algo = unirl.build("PPO", tiny_ppo)
    try:
        algo.train()
        path = algo.save(str(tmp_path / "ck"))
        (tmp_path / "ck" / "worker_state.pkl").write_bytes(pickle.dumps({"sampler": _Evil(marker)}))
        with pytest.raises(unirl.UnirlError, match="refusing to load"):
            algo.restore(path, resume=True)
        assert not marker.exists()
        algo.restore(path)  # without resume the file is never read
        assert not marker.exists()
    finally:
        algo.stop()
