"""A fuzz test over the CLI's flags and config keys: whatever the combination, `unirl` exits 0 or 2, prints
no traceback, does not hang, and leaves either a whole run directory (exit 0) or none (exit 2).

The cases are drawn from tables of good and bad values with a fixed seed (the same cases on every run:
a failure is reproducible from its case number), and run in this process through `unirl.cli.main`,
each with one tiny iteration, so the whole test takes seconds.
"""
import io
import json
import os
import random
import signal
from contextlib import redirect_stderr, redirect_stdout

import pytest

from unirl.cli import main

pytestmark = pytest.mark.timeout(300)

#: Seconds one case may take before it counts as a hang.
CASE_TIMEOUT_S = 60
NUM_TRAIN_CASES = 40

# Each flag's candidate values: valid ones (weighted by repetition) and the mistakes users make.
FLAGS = {
    "--run": ["PPO"] * 6 + ["ppo", "ES", "ars", "A2C", "PPPO", "", "nosuch.module:Algo"],
    "--env": ["CartPole-v1"] * 6 + ["cartpole", "CartPole-v7", "nosuch:Env", "Acrobot-v1"],
    "--framework": ["torch"] * 6 + ["pytorch", "numpy", "nosuch:Adapter", ""],
    "--backend": ["local"] * 6 + ["multiprocess", "nosuch:Backend", "LOCAL"],
    "--seed": ["0", "3", "-1", "x", "1.5", "99999999999999999999"],
    "--checkpoint-freq": ["0", "1", "-1", "many"],
    "--keep-checkpoints-num": ["1", "2", "0", "-4"],
    "--evaluation-episodes": ["0", "1", "-1"],
    "--stop": (['{"training_iteration": 1}'] * 4
               + ['{"timesteps_total": 64}', '{"episodes_total": 1}', '{"time_total_s": 0}', "{}", "[]", "nan",
                  '{"iterations": 1}', '{"training_iteration": "1"}', '{"training_iteration": Infinity}',
                  '{"training_iteration": 1, "timesteps_total": 64}', "{'training_iteration': 1}"]),
    "--address": ["auto", "127.0.0.1:1"],
}
#: Config keys and candidate values (the tiny base config below is always there, then these override it).
CONFIG = {
    "num_workers": [1, 2, 0, -1, "two", 1.5, True],
    "num_envs_per_worker": [4, 2, 0, None],
    "train_batch_size": [64, 128, 100, 0, -64, 10 ** 12, "64"],
    "minibatch_size": [32, 64, 7, 0, 1000],
    "num_epochs": [1, 2, 0, -1],
    "lr": [1e-3, 0, -1, "fast", None],
    "gamma": [0.9, 1.0, 2, -0.5],
    "lr_schedule": [[[0, 1e-3], [1000, 1e-4]], [[0, -1e-3]], [[-1, 1e-3]], "linear", [[1]], [], [["a", "b"]]],
    "lr_decay_timesteps": [0, 1000, -5],
    "grad_clip": [0.5, 0, -1, "x"],
    "clip_param": [0.2, -0.1],
    "entropy_coeff": [0.0, 0.01, "a"],
    "env_config": [{}, {"bogus": 1}, {"sutton_barto_reward": True}, "x"],
    "backend_options": [{}, {"adress": 1}, {"num_threads": 1}, []],
    "model": [{"hidden_sizes": [8]}, {"hidden": [8]}, {"hidden_sizes": "x"}, {"activation": "nope"},
              {"hidden_sizes": [8], "activation": "relu"}, {"hidden_sizes": [-3]}],
    "seed": [0, 7, -3, "s"],
    "normalize_observations": [True, False, "yes"],
    "evaluation_num_episodes": [1, 0],
    "metrics_num_episodes_for_smoothing": [10, 0],
    "worker_timeout_s": [None, 30, -1, "soon"],
    "num_workres": [2],
    "env": ["CartPole-v1", 5, None],
}
BASE_CONFIG = {"num_envs_per_worker": 4, "train_batch_size": 64, "minibatch_size": 32, "num_epochs": 1,
               "evaluation_num_episodes": 1}
#: Tiny configs of the population algorithms (PPO's keys above are unknown to them).
POPULATION_CONFIG = {"ES": {"episodes_per_batch": 6, "noise_table_size": 100_000, "max_episode_steps": 40,
                            "model": {"hidden_sizes": [8]}, "evaluation_num_episodes": 1},
                     "ARS": {"num_directions": 3, "top_directions": 2, "noise_table_size": 100_000,
                             "max_episode_steps": 40, "evaluation_num_episodes": 1}}


class Hang(BaseException):  # not an Exception: code under test that catches Exception does not swallow it
    pass


def run_cli(argv):
    """(exit code, stdout, stderr) of `unirl ARGV` in this process; an exception escaping it fails the case."""
    out, err = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise Hang(f"no answer in {CASE_TIMEOUT_S} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return rc, out.getvalue(), err.getvalue()


def train_case(rng: random.Random, out: str) -> list[str]:
    argv = ["train", "--output", out, "--quiet"]
    for flag in rng.sample(sorted(FLAGS), rng.randint(0, 3)):
        argv += [flag, rng.choice(FLAGS[flag])]
    if "--stop" not in argv:
        argv += ["--stop", '{"training_iteration": 1}']
    if "--evaluation-episodes" not in argv:
        argv += ["--evaluation-episodes", "1"]
    run = argv[argv.index("--run") + 1].upper() if "--run" in argv else "PPO"
    config = dict(POPULATION_CONFIG.get(run, BASE_CONFIG))
    for key in rng.sample(sorted(CONFIG), rng.randint(0, 3)):
        config[key] = rng.choice(CONFIG[key])
    if rng.random() < 0.1:
        argv += ["--config", json.dumps(config)[:-3]]  # truncated JSON
    else:
        argv += ["--config", json.dumps(config)]
    return argv


def check_case(i, argv, out_dir, rc, stdout, stderr):
    case = f"case {i}: unirl {' '.join(argv)}\nstderr:\n{stderr}"
    assert rc in (0, 2), case
    assert "Traceback" not in stderr and "Traceback" not in stdout, case
    if rc == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines and lines[0].startswith("unirl") and "error: " in lines[0], case
        # one line, except a JSON error, which shows the text and a caret under the bad character
        assert len(lines) == 1 or ("is not valid JSON" in lines[0] and len(lines) == 3), case
        assert not os.path.exists(out_dir), f"a failed start left a run folder; {case}"
    elif argv[0] == "train":
        assert os.path.isfile(os.path.join(out_dir, "params.json")), case
        with open(os.path.join(out_dir, "result.json")) as f:
            assert len(f.readlines()) >= 1, case
        assert os.listdir(os.path.join(out_dir, "checkpoints")), case


def test_train_flags_and_config_keys(tmp_path):
    rng = random.Random(16)
    outcomes = {0: 0, 2: 0}
    for i in range(NUM_TRAIN_CASES):
        out_dir = str(tmp_path / f"case{i}")
        argv = train_case(rng, out_dir)
        rc, stdout, stderr = run_cli(argv)
        check_case(i, argv, out_dir, rc, stdout, stderr)
        outcomes[rc] += 1
    # The tables are built so that both outcomes are common: the test checks runs as well as refusals.
    assert outcomes[0] >= 5 and outcomes[2] >= 10, outcomes
    print(f"fuzz outcomes by exit code: {outcomes}")


OTHER_CASES = [
    ["evaluate", "{tmp}/nowhere"],
    ["evaluate", "{tmp}", "--episodes", "0"],
    ["evaluate", "{tmp}", "--episodes", "x"],
    ["evaluate", "{tmp}", "--framework", "pytorch"],
    ["conformance", "--quick", "--backend", "bogus"],
    ["conformance", "--quick", "--backend", "local,bogus"],
    ["conformance", "--quick", "--framework", ","],
    ["conformance", "--quick", "--levels", "7"],
    ["conformance", "--quick", "--levels", "one"],
    ["bench", "--backend", "bogus", "--framework", "torch"],
    ["plot", "{tmp}/nowhere"],
    ["tune", "--space", "{"],
    ["tune", "--space", '{"lr": {"loguniform": [0, 1]}}'],
    ["train", "--resume", "{tmp}/nowhere"],
    ["train", "--bogus-flag"],
    ["bogus-command"],
    [],
]


@pytest.mark.parametrize("i", range(len(OTHER_CASES)))
def test_other_commands_refuse_in_one_line(tmp_path, i):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in OTHER_CASES[i]]
    rc, stdout, stderr = run_cli(argv)
    check_case(i, argv, str(tmp_path / "never"), rc, stdout, stderr)
    assert rc == 2, f"unirl {' '.join(argv)}: exit {rc}\n{stderr}"
