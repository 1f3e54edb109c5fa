"""Every bad input of issue #16 ends in one clear sentence (exit code 2 for usage errors, no traceback), a
refusal, or documented behaviour; a start that fails leaves no run folder. The CLI runs in this process
(`unirl.cli.main`), so each case costs milliseconds to a second."""
import io
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

import unirl
from unirl.cli import check_stop, main
from unirl.errors import UnirlError
from conftest import REPO, TINY_PPO

pytestmark = pytest.mark.timeout(300)

TINY = json.dumps(dict(TINY_PPO, num_epochs=1))
ONE_ITER = '{"training_iteration": 1}'


def cli(*argv):
    """(exit code, stdout, stderr) of `unirl ARGV` run in this process; argparse's SystemExit gives its code."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:
            rc = e.code
    assert "Traceback" not in err.getvalue(), err.getvalue()
    return rc, out.getvalue(), err.getvalue()


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A whole checkpoint of a tiny PPO run (one iteration)."""
    folder = tmp_path_factory.mktemp("ck") / "checkpoint_000001"
    algo = unirl.build("PPO", TINY_PPO)
    try:
        algo.train()
        algo.save(str(folder))
    finally:
        algo.stop()
    return folder


def copy_checkpoint(src, dst):
    dst.mkdir()
    for name in ("weights.npz", "state.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


# -- train: flags and config ---------------------------------------------------------------------

def test_negative_seed(tmp_path):
    rc, _, err = cli("train", "--seed", "-1", "--output", tmp_path / "run")
    assert rc == 2 and one_line(err) == ("unirl train: error: argument --seed: must be at least 0, got -1 "
                                         "(see `unirl train --help`).")
    rc, _, err = cli("train", "--config", '{"seed": -1}', "--output", tmp_path / "run")
    assert rc == 2 and one_line(err) == "unirl: error: config key `seed` must be 0 or more, got -1."
    assert not (tmp_path / "run").exists()


def test_train_batch_size_beyond_memory_is_refused_before_any_allocation():
    with pytest.raises(UnirlError, match=r"^config key `train_batch_size` 1,000,000,000,000 needs at least "
                                         r"29\.1 TiB of memory \(32 bytes per step of `CartPole-v1`\), more than "
                                         r"this machine's .*; lower it\.$"):
        unirl.build("PPO", {"train_batch_size": 10 ** 12})


def test_output_is_a_file_or_not_writable(tmp_path, monkeypatch):
    f = tmp_path / "afile"
    f.write_text("x")
    rc, _, err = cli("train", "--output", f)
    assert rc == 2 and one_line(err) == (f"unirl: error: --output `{f}` is a file, not a folder; give a folder for "
                                         "the run directory.")
    rc, _, err = cli("train", "--output", f / "run")
    assert rc == 2 and one_line(err) == f"unirl: error: cannot make the run directory `{f / 'run'}`: `{f}` is a file, not a folder."
    # Unwritable: tests may run as root (who may write anywhere), so the permission answer is simulated.
    ro = tmp_path / "readonly"
    ro.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if os.path.abspath(p) == str(ro) else real_access(p, mode))
    rc, _, err = cli("train", "--output", ro / "run")
    assert rc == 2 and one_line(err) == (f"unirl: error: cannot make the run directory `{ro / 'run'}`: `{ro}` is "
                                         "not writable by this user.")
    assert os.listdir(ro) == []


@pytest.mark.parametrize("flag,value,least", [("--checkpoint-freq", "-1", 0), ("--keep-checkpoints-num", "0", 1),
                                              ("--evaluation-episodes", "-2", 0), ("--seed", "x", None)])
def test_negative_counts_are_usage_errors(tmp_path, flag, value, least):
    rc, _, err = cli("train", flag, value, "--output", tmp_path / "run")
    why = f"must be at least {least}, got {value}" if least is not None else f"expected an integer, got '{value}'"
    assert rc == 2 and one_line(err) == f"unirl train: error: argument {flag}: {why} (see `unirl train --help`)."
    assert not (tmp_path / "run").exists()


def test_empty_stop_is_refused_unless_forever(tmp_path):
    rc, _, err = cli("train", "--stop", "{}", "--output", tmp_path / "run")
    assert rc == 2 and one_line(err) == (
        "unirl: error: --stop has no criterion, so the run would never stop; give one such as "
        "'{\"timesteps_total\": 100000}', or pass --forever to train until Ctrl-C / SIGTERM.")
    assert check_stop({}, forever=True) == {}
    rc, _, err = cli("train", "--stop", '{"timesteps_total": NaN}', "--output", tmp_path / "run")
    assert rc == 2 and one_line(err) == "unirl: error: stop criterion `timesteps_total` must be a finite number, got nan."
    assert not (tmp_path / "run").exists()


def test_unknown_env_config_keyword_names_the_arguments(tmp_path):
    rc, _, err = cli("train", "--config", '{"env_config": {"sutton_barto": true}}', "--output", tmp_path / "run")
    assert rc == 2 and one_line(err) == (
        "unirl: error: env_config key `sutton_barto` is not an argument of environment `CartPole-v1`. Did you mean "
        "`sutton_barto_reward`? It takes: sutton_barto_reward, render_mode.")
    assert not (tmp_path / "run").exists()  # a failed start leaves no run folder


def test_lr_schedule_must_not_be_negative():
    for pair in ([0, -1e-3], [-5, 1e-3]):
        with pytest.raises(UnirlError, match=r"^config key `lr_schedule` must not hold a negative timestep or "
                                             rf"learning rate, got the pair \[{pair[0]}, {pair[1]}\]\.$"):
            unirl.build("PPO", dict(TINY_PPO, lr_schedule=[pair, [1000, 1e-4]]))
    with pytest.raises(UnirlError, match=r"^config key `lr_schedule` must hold numbers, got the pair \['a', 1\]\.$"):
        unirl.build("PPO", dict(TINY_PPO, lr_schedule=[["a", 1]]))


def test_unknown_backend_options_are_errors_with_a_suggestion():
    with pytest.raises(UnirlError, match=r"^unknown backend option `num_thread` for the `multiprocessing` backend\. "
                                         r"Did you mean `num_threads`\? It takes: num_threads, start_method, "
                                         r"start_timeout\.$"):
        unirl.build("PPO", dict(TINY_PPO, backend="multiprocessing", backend_options={"num_thread": 2}))
    with pytest.raises(UnirlError, match=r"^unknown backend option `address` for the `local` backend\. It takes no "
                                         r"options\.$"):
        unirl.build("PPO", dict(TINY_PPO, backend_options={"address": "auto"}))


def test_ray_address_that_does_not_answer_fails_within_the_timeout(tmp_path):
    pytest.importorskip("ray")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    t0 = time.monotonic()
    rc, _, err = cli("train", "--backend", "ray", "--address", f"127.0.0.1:{port}", "--config", TINY,
                     "--output", tmp_path / "run")
    assert rc == 2 and one_line(err).startswith(f"unirl: error: cannot reach the Ray cluster at `127.0.0.1:{port}` "
                                                "within 10 s (")
    assert time.monotonic() - t0 < 30 and not (tmp_path / "run").exists()
    from unirl.backends.ray import _check_reachable

    # An address that never answers (TEST-NET-1, RFC 5737): at most the stated timeout.
    t0 = time.monotonic()
    with pytest.raises(UnirlError, match=r"^cannot reach the Ray cluster at `192\.0\.2\.1:6379` within 0\.5 s"):
        _check_reachable("192.0.2.1:6379", 0.5)
    assert time.monotonic() - t0 < 5


def test_algorithm_names_are_case_insensitive_with_did_you_mean():
    from unirl.algorithms.dqn import DQN
    from unirl.algorithms.ppo import PPO

    assert unirl.get_algorithm_class("ppo") is PPO and unirl.get_algorithm_class("Dqn") is DQN
    with pytest.raises(UnirlError, match=r"^unknown algorithm `pp0`; unirl has .* Did you mean `PPO`\?$"):
        unirl.get_algorithm_class("pp0")


def test_cli_run_name_in_any_case_is_the_registered_one(tmp_path):
    rc, out, err = cli("train", "--run", "ppo", "--config", TINY, "--stop", ONE_ITER, "--output", tmp_path / "run",
                       "--evaluation-episodes", "0", "--quiet")
    assert rc == 0, err
    assert json.load(open(tmp_path / "run" / "params.json"))["run"] == "PPO"


# -- training that goes wrong --------------------------------------------------------------------

def test_nan_weights_stop_the_run_naming_the_iteration_and_keep_the_finite_checkpoint(tmp_path):
    # lr jumps to 1e30 at 128 steps: iteration 1 (64 steps) is fine, iteration 2 makes the weights non-finite.
    config = dict(TINY_PPO, num_epochs=1, lr_schedule=[[0, 1e-3], [127, 1e-3], [128, 1e30]])
    run = tmp_path / "run"
    rc, _, err = cli("train", "--config", json.dumps(config), "--stop", '{"training_iteration": 4}',
                     "--checkpoint-freq", "1", "--output", run, "--quiet")
    ck = run / "checkpoints" / "checkpoint_000001"
    assert rc == 1
    assert one_line(err) == ("unirl: error: PPO's weights became NaN or infinite in iteration 2; lower the learning "
                             "rate (`lr`, `lr_schedule`) or clip gradients (`grad_clip`). The run stopped (its last "
                             f"checkpoint, with finite weights, is {ck}).")
    assert os.listdir(run / "checkpoints") == ["checkpoint_000001"]
    with np.load(ck / "weights.npz") as z:
        assert all(np.isfinite(z[k]).all() for k in z.files)
    assert [json.loads(line)["iteration"] for line in open(run / "result.json")] == [1]
    # NaN in the first iteration: nothing was logged, so no run folder is left.
    rc, _, err = cli("train", "--config", json.dumps(dict(TINY_PPO, num_epochs=1, lr=1e30)),
                     "--stop", ONE_ITER, "--output", tmp_path / "run1", "--quiet")
    assert rc == 1 and "weights became NaN or infinite in iteration 1" in err and "it has no checkpoint" in err
    assert not (tmp_path / "run1").exists()


def test_the_api_raises_on_non_finite_weights():
    from unirl.errors import NonFiniteWeightsError

    algo = unirl.build("PPO", dict(TINY_PPO, num_epochs=1, lr=1e30))
    try:
        with pytest.raises(NonFiniteWeightsError, match=r"^PPO's weights became NaN or infinite in iteration 1;") as e:
            algo.train()
        assert e.value.iteration == 1 and isinstance(e.value, UnirlError)
    finally:
        algo.stop()


# -- the Python API ------------------------------------------------------------------------------

def test_build_with_the_env_as_second_argument():
    with pytest.raises(UnirlError, match=r"^the config must be a dict of config keys, got str 'CartPole-v1'\. To set "
                                         r"the env: unirl\.build\(\"PPO\", \{\"env\": \"CartPole-v1\"\}\)\.$"):
        unirl.build("PPO", "CartPole-v1")


def test_train_after_stop_and_evaluate_zero():
    algo = unirl.build("PPO", TINY_PPO)
    algo.train()
    with pytest.raises(UnirlError, match=r"^evaluate\(\) needs a number of episodes of at least 1, got 0\.$"):
        algo.evaluate(0)
    assert algo.evaluate(1)["evaluation/episodes"] == 1
    algo.stop()
    with pytest.raises(UnirlError, match=r"^this PPO algorithm was stopped \(stop\(\) ends its workers\), so it "
                                         r"cannot train; build a new one, or unirl\.restore\(\) a checkpoint saved "
                                         r"before stop\(\)\.$"):
        algo.train()
    algo.stop()  # a second stop() is harmless


LEAVE_WITHOUT_STOP = """
import unirl
algo = unirl.build("PPO", {"num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32,
                           "num_epochs": 1, "backend": "multiprocessing", "num_workers": 1})
algo.train()
print("done")
"""


def test_leaving_a_multiprocessing_run_without_stop_is_quiet():
    r = subprocess.run([sys.executable, "-c", LEAVE_WITHOUT_STOP], capture_output=True, text=True, timeout=180,
                       cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "done"
    assert r.stderr == "", r.stderr  # no ConnectionResetError / BrokenPipeError from the worker template


# -- checkpoints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["missing_weights", "empty_weights", "truncated_weights", "truncated_state",
                                    "state_without_config"])
def test_damaged_checkpoint_is_one_line(tmp_path, checkpoint, damage):
    ck = copy_checkpoint(checkpoint, tmp_path / "ck")
    w, s = ck / "weights.npz", ck / "state.json"
    if damage == "missing_weights":
        w.unlink()
        expected = f"checkpoint file `{w}` is missing"
    elif damage == "empty_weights":
        w.write_bytes(b"")
        expected = f"checkpoint file `{w}` is damaged (EOFError: No data left in file)"
    elif damage == "truncated_weights":
        w.write_bytes(w.read_bytes()[:300])
        expected = f"checkpoint file `{w}` is damaged (BadZipFile: File is not a zip file)"
    elif damage == "truncated_state":
        s.write_text(s.read_text()[:100])
        expected = f"checkpoint file `{s}` is damaged (JSONDecodeError: "
    else:
        state = json.loads(s.read_text())
        del state["config"]
        s.write_text(json.dumps(state))
        expected = f"checkpoint file `{s}` names no algorithm and config: it is not a unirl algorithm checkpoint."
    rc, _, err = cli("evaluate", ck, "--episodes", "1")
    assert rc == 2 and one_line(err).startswith(f"unirl: error: {expected}")
    with pytest.raises(UnirlError):
        unirl.restore(str(ck))
    if damage == "state_without_config":
        with pytest.raises(UnirlError, match=r"^the checkpoint's state\.json names no algorithm and config"):
            unirl.restore(str(ck), trust_checkpoint=True)


def test_evaluate_episodes_must_be_positive(checkpoint):
    for value in ("-3", "0"):
        rc, _, err = cli("evaluate", checkpoint, "--episodes", value)
        assert rc == 2 and one_line(err) == (f"unirl evaluate: error: argument --episodes: must be at least 1, got "
                                             f"{value} (see `unirl evaluate --help`).")


# -- other commands and extras -------------------------------------------------------------------

def test_conformance_with_an_unknown_backend_or_framework():
    rc, _, err = cli("conformance", "--quick", "--backend", "bogus")
    assert rc == 2 and one_line(err) == ("unirl: error: unknown backend `bogus` in --backend; unirl has local, "
                                         "multiprocessing, ray, mpi. (Your own: an import path pkg.module:Class.)")
    rc, _, err = cli("conformance", "--quick", "--framework", "torch,pytorch")
    assert rc == 2 and one_line(err).startswith("unirl: error: unknown framework `pytorch` in --framework; unirl has "
                                                "torch, tf, jax")
    assert "Did you mean `torch`?" in err


def test_missing_bench_extra_is_one_sentence(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "stable_baselines3" else real(name, *a))
    monkeypatch.syspath_prepend(os.path.join(REPO, "benchmarks"))
    import ppo_vs_sb3

    assert ppo_vs_sb3.main(["--seeds", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: the comparison with Stable-Baselines3 needs the `stable_baselines3` package, which is not "
        "installed; install it with `pip install 'unirl[bench]'` (or pass --skip-sb3).")


def test_missing_atari_extra_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if ale-py were not installed
    rc, _, err = cli("train", "--env", "ALE/Pong-v5", "--output", tmp_path / "run")
    assert rc == 2 and one_line(err) == ("unirl: error: environment `ALE/Pong-v5` needs the `ale_py` package: install "
                                         "it with `pip install 'unirl[atari]'`.")
    assert not (tmp_path / "run").exists()


def test_usage_errors_are_one_line_without_usage_dump():
    rc, _, err = cli()
    assert rc == 2 and one_line(err) == ("unirl: error: the following arguments are required: command "
                                         "(see `unirl --help`).")
    rc, _, err = cli("train", "--bogus")
    assert rc == 2 and one_line(err) == "unirl: error: unrecognized arguments: --bogus (see `unirl --help`)."


# -- found by the fuzz test (tests/test_cli_fuzz.py) ---------------------------------------------

@pytest.mark.parametrize("change,message", [
    ({"worker_timeout_s": "soon"}, "config key `worker_timeout_s` must be a number, got 'soon'."),
    ({"recreate_failed_workers": "yes"}, "config key `recreate_failed_workers` must be true or false, got 'yes'."),
    ({"model": {"hidden_sizes": "x"}}, "config key `model.hidden_sizes` must be a list of integers, got 'x'."),
    ({"model": {"conv_filters": 3}}, "config key `model.conv_filters` must be a JSON list, got 3."),
    ({"lr_schedule": "linear"}, "config key `lr_schedule` must be a JSON list, got 'linear'."),
])
def test_config_values_of_the_wrong_type(change, message):
    with pytest.raises(UnirlError) as e:
        unirl.build("PPO", dict(TINY_PPO, **change))
    assert str(e.value) == message


def test_address_with_a_backend_options_list_or_without_ray(tmp_path):
    rc, _, err = cli("train", "--address", "auto", "--backend", "ray", "--config", '{"backend_options": []}',
                     "--output", tmp_path / "r")
    assert rc == 2 and one_line(err) == "unirl: error: config key `backend_options` must be a JSON object, got []."
    rc, _, err = cli("train", "--address", "auto", "--output", tmp_path / "r")
    assert rc == 2 and one_line(err) == ("unirl: error: --address joins a Ray cluster, but the backend is `local`; "
                                         "add --backend ray.")
    assert not (tmp_path / "r").exists()


def test_population_algorithms_train_and_evaluate_from_the_cli(tmp_path):
    # `--run ES` ended in a KeyError after training (its evaluate() had no weights digest); the numpy
    # framework (acting only) trains ES, and refuses a gradient algorithm in one line.
    config = json.dumps({"episodes_per_batch": 6, "noise_table_size": 100_000, "max_episode_steps": 40})
    rc, out, err = cli("train", "--run", "es", "--framework", "numpy", "--config", config, "--stop", ONE_ITER,
                       "--evaluation-episodes", "1", "--output", tmp_path / "es")
    assert rc == 0, err
    assert "weights digest" in out and json.load(open(tmp_path / "es" / "evaluation.json"))["weights_digest"]
    rc, _, err = cli("train", "--framework", "numpy", "--config", TINY, "--stop", ONE_ITER, "--output", tmp_path / "p")
    assert rc == 2 and one_line(err) == ("unirl: error: the `numpy` framework has no autodiff: it acts and evaluates "
                                         "only; learn with torch, tf or jax (e.g. --framework torch).")
    assert not (tmp_path / "p").exists()
