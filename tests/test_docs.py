"""The documentation site builds in strict mode (no broken link, missing API object or other warning), and
its generated tables come from the code: every config field documented, defaults as the dataclasses say."""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", os.path.join(ROOT, "scripts", "docs_hooks.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_site_builds_in_strict_mode_with_no_warning(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed: `pip install -e '.[docs]'` (make test installs it with .[dev])")
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=540,
                          env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-5000:]
    assert "WARNING" not in log, log[-5000:]
    site = tmp_path / "site"
    for page in ("index.html", "getting-started/index.html", "algorithms/ppo/index.html", "api/policy/index.html"):
        assert (site / page).exists(), page
    ppo = (site / "algorithms" / "ppo" / "index.html").read_text()
    assert "clip_param" in ppo and "Surrogate clip range" in ppo  # the generated config table
    assert "unirl.algorithms.ppo.PPO" in ppo  # the API block


def test_every_algorithm_config_field_is_documented():
    import unirl
    from unirl.registry import ALGORITHMS

    h = hooks()
    for name in ALGORITHMS:
        cls = unirl.get_algorithm_class(name).config_class
        docs = h.field_comments(cls)
        undocumented = [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")
                        and f.name not in docs]
        assert not undocumented, f"{name}: {undocumented} have no `#:` comment"


def test_config_table_shows_the_dataclass_defaults():
    from unirl.algorithms.ppo import PPOConfig

    h = hooks()
    rows = {r[0]: r for r in h.config_rows(PPOConfig)}
    assert rows["clip_param"][2] == f"`{PPOConfig().clip_param!r}`" and "clip" in rows["clip_param"][3].lower()
    assert "env" not in rows  # shared with every algorithm, same default: on the common table
    ddpg = {r[0]: r for r in h.config_rows(h_td3(), overrides={"twin_q": False, "policy_delay": 1})}
    assert ddpg["twin_q"][2] == "`false`" and ddpg["policy_delay"][2] == "`1`"
    assert "| `clip_param` |" in h.config_table("PPO")


def h_td3():
    from unirl.algorithms.td3 import TD3Config

    return TD3Config


def test_markers_are_replaced_and_unknown_ones_refused():
    h = hooks()
    out = h.render_markers("a\n<!-- unirl:algorithm-table -->\n\nb <!-- unirl:algorithm-fact PPO pattern -->\n")
    assert "| `PPO` |" in out and "b `SyncSamples`" in out and "unirl:" not in out
    with pytest.raises(ValueError, match="unknown unirl marker"):
        h.render_markers("<!-- unirl:nonsense -->")


def test_every_tuned_config_is_in_the_generated_list():
    h = hooks()
    table = h.config_files()
    for f in os.listdir(os.path.join(ROOT, "configs")):
        assert f"`configs/{f}`" in table
