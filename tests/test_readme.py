"""Every command in the README runs, as written, with a smaller budget where it trains (a later --stop or
--episodes flag overrides the one in the command); the README's Python example runs as written."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Budget flags appended to each kind of command (argparse keeps the last occurrence of a flag).
TINY = {"train": ["--stop", '{"training_iteration": 2}', "--evaluation-episodes", "1", "--quiet"],
        "evaluate": ["--episodes", "1"], "conformance": []}


def readme_blocks(lang: str) -> list[str]:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(rf"```{lang}\n(.*?)```", text, re.S)


def readme_commands() -> list[str]:
    lines = [line.split("  #")[0].strip() for block in readme_blocks("bash") for line in block.splitlines()]
    return [line for line in lines if line]


def workdir(tmp_path):
    """A folder laid out as the repository root (configs/ and examples/ in it), so commands run from it."""
    for name in ("configs", "examples"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    return tmp_path


def test_readme_is_short_and_every_command_is_known():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert len(f.read().splitlines()) <= 200
    for command in readme_commands():
        words = shlex.split(command)
        words = words[1:] if words[0].startswith("PYTHONPATH=") else words
        assert words[:2] in (["make", "train"], ["make", "test"]) or (words[0] == "unirl" and words[1] in TINY), command


def test_make_targets_run_the_commands_the_readme_says():
    with open(os.path.join(ROOT, "Makefile")) as f:
        makefile = f.read()
    train = re.search(r"^train:.*\n\t(.*)$", makefile, re.M).group(1)
    assert "unirl train --run=PPO --env=CartPole-v1" in train and "timesteps_total" in train
    assert re.search(r"^test:.*\n\t\$\(VENV\)/bin/python -m pytest -q$", makefile, re.M)
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "make test" in f.read()  # `make test` is what CI runs: this suite is its test


@pytest.mark.timeout(900)
def test_readme_commands_run(tmp_path):
    cwd = workdir(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), ROOT) if p))
    with open(os.path.join(ROOT, "Makefile")) as f:
        make_train = re.search(r"^train:.*\n\t\$\(VENV\)/bin/(.*)$", f.read(), re.M).group(1)
    commands = [make_train] + [c for c in readme_commands() if not c.startswith("make ")]
    for command in commands:
        words = shlex.split(command)
        if words[0].startswith("PYTHONPATH="):
            words = words[1:]
        argv = [sys.executable, "-m", "unirl.cli", *words[1:], *TINY[words[1]]]
        if words[1] == "train" and "--output" not in words:
            argv += ["--output", str(tmp_path / f"run{len(os.listdir(tmp_path))}")]
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.timeout(600)
def test_readme_python_example_runs(tmp_path):
    (code,) = readme_blocks("python")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and re.fullmatch(r"\d+ \S+ [0-9a-f]{16}", lines[0]) and float(lines[1]) > 0
