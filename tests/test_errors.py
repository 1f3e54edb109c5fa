"""Errors a user can cause: one clear sentence each, with a suggestion where one helps."""
import subprocess
import sys

import pytest

import unirl
from unirl.errors import UnirlError
from conftest import run_cli


def test_unknown_config_key_lists_valid_keys_and_suggests():
    with pytest.raises(UnirlError) as e:
        unirl.build("PPO", {"num_worker": 2})
    msg = str(e.value)
    assert "unknown config key `num_worker`" in msg
    assert "Did you mean `num_workers`?" in msg
    assert "num_envs_per_worker" in msg and "train_batch_size" in msg  # the valid keys are listed


def test_unknown_model_key():
    with pytest.raises(UnirlError, match=r"unknown model config key `hidden`. Did you mean `hidden_sizes`\?"):
        unirl.build("PPO", {"model": {"hidden": [32]}})


def test_wrong_type():
    with pytest.raises(UnirlError, match="config key `num_workers` must be an integer, got 'two'"):
        unirl.build("PPO", {"num_workers": "two"})


def test_batch_not_multiple_of_envs():
    with pytest.raises(UnirlError, match="train_batch_size 100 is not a multiple of the number of envs"):
        unirl.build("PPO", {"train_batch_size": 100, "num_envs_per_worker": 8})


def test_unknown_algorithm():
    with pytest.raises(UnirlError, match=r"^unknown algorithm `PPPO`; unirl has .*PPO.* Did you mean `PPO`\?$"):
        unirl.build("PPPO")


def test_unknown_env():
    with pytest.raises(UnirlError, match=r"^unknown environment `CartPole-v7`: Gymnasium has no env with that id\. "
                                         r"Did you mean `CartPole-v\d`\?$"):
        unirl.build("PPO", {"env": "CartPole-v7"})


def test_unknown_framework_and_backend():
    with pytest.raises(UnirlError, match=r"unknown framework `pytorch`.*Did you mean `torch`\?"):
        unirl.build("PPO", {"framework": "pytorch"})
    with pytest.raises(UnirlError, match=r"unknown backend `multiprocess`.*Did you mean `multiprocessing`\?"):
        unirl.build("PPO", {"backend": "multiprocess"})


@pytest.mark.parametrize("key,kind", [("env", "environment"), ("framework", "framework"), ("backend", "backend")])
def test_an_import_path_that_does_not_import_names_the_module(key, kind):
    with pytest.raises(UnirlError, match=rf"^cannot load {kind} `nosuchpkg:Thing`: No module named 'nosuchpkg'\.$"):
        unirl.build("PPO", {key: "nosuchpkg:Thing"})


def test_the_loader_names_a_missing_attribute_and_a_missing_registered_module():
    from unirl.loading import load

    with pytest.raises(UnirlError, match=r"^cannot load backend `unirl.errors:Nope`: module 'unirl.errors' has no "
                                         r"attribute 'Nope'\.$"):
        load("unirl.errors:Nope", {}, "backend")
    with pytest.raises(UnirlError, match=r"^the `gone` backend is not available in this version of unirl\.$"):
        load("gone", {"gone": "unirl.no_such_module:Backend"}, "backend")
    assert load("err", {"err": "unirl.errors:UnirlError"}, "thing") is UnirlError


@pytest.mark.parametrize("framework,module,extra", [("torch", "torch", "torch"), ("tf", "tensorflow", "tf"),
                                                     ("jax", "jax", "jax")])
def test_missing_framework_names_the_extra(framework, module, extra):
    # Hide the module as if it were not installed: a None entry in sys.modules makes its import fail.
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "import unirl\n"
            "try:\n"
            f"    unirl.build('PPO', {{'framework': {framework!r}}})\n"
            "except unirl.UnirlError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == (f"the `{framework}` framework needs the `{module}` package, which is not installed; "
                                  f"install it with `pip install 'unirl[{extra}]'`."), out.stderr


def test_bad_config_json_points_at_the_error():
    out = run_cli("train", "--config", '{"num_workers": 1 "lr": 0.1}')
    assert out.returncode == 2
    assert "unirl: error: --config is not valid JSON: Expecting ',' delimiter at position 18" in out.stderr
    lines = out.stderr.splitlines()
    caret = next(l for l in lines if l.strip() == "^")
    text = next(l for l in lines if l.startswith('  {"num_workers"'))
    assert text[caret.index("^")] == '"', "the caret points at the character where parsing failed"
    assert "Traceback" not in out.stderr


def test_cli_unknown_key_is_one_line_without_traceback():
    out = run_cli("train", "--config", '{"lrr": 0.1}')
    assert out.returncode == 2
    assert out.stderr.startswith("unirl: error: unknown config key `lrr`. Did you mean `lr`?")
    assert "Traceback" not in out.stderr


def test_cli_unknown_stop_key():
    out = run_cli("train", "--stop", '{"timesteps": 10}')
    assert out.returncode == 2
    assert "unknown stop criterion `timesteps`. Did you mean `timesteps_total`?" in out.stderr
