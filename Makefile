# The two quick-start commands: `make train` (PPO on CartPole-v1 with torch, local backend) and
# `make test` (the test suite, which also builds the documentation site in strict mode and runs
# examples/). `make docs` builds the site into site/, `make docs-serve` serves it on
# http://127.0.0.1:8000 with live reload. Each installs what it needs into .venv first.
PY ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip install -q -c constraints.txt

.PHONY: train test install-torch install-dev install-docs docs docs-serve bench

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	# torch first: the CPU build, so nothing asks for the CUDA one
	$(PIP) torch==2.13.0

install-torch: $(VENV)/bin/python
	$(PIP) -e ".[torch]"

install-dev: $(VENV)/bin/python
	$(PIP) -e ".[dev]"

install-docs: $(VENV)/bin/python
	$(PIP) -e ".[docs]"

# Strict: a broken link, a missing API object or any other warning fails the build.
docs: install-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: install-docs
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

train: install-torch
	$(VENV)/bin/unirl train --run=PPO --env=CartPole-v1 --stop='{"timesteps_total": 100000}'

test: install-dev
	$(VENV)/bin/python -m pytest -q

bench: install-dev
	$(VENV)/bin/python benchmarks/ppo_vs_sb3.py --seeds 0 1 2
