"""JAX's persistent compilation cache: on by default in a folder per CPU model, off with
UNIRL_JAX_CACHE_DIR="", JAX's own variable wins; a run from the cache has the same bits."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("jax")

CODE = """
import json, os, sys, time, unirl
import jax
t = time.perf_counter()
algo = unirl.build("PPO", {"env": "CartPole-v1", "framework": "jax", "seed": 0})
for _ in range(3):
    algo.train()
print(json.dumps({"digest": algo.weights_digest(), "dir": jax.config.jax_compilation_cache_dir}))
algo.stop()
"""


def _run(env_extra):
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("UNIRL_JAX_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(300)
def test_compiled_steps_are_cached_and_give_the_same_bits(tmp_path):
    cache = tmp_path / "cache"
    first = _run({"UNIRL_JAX_CACHE_DIR": str(cache)})
    assert first["dir"] == str(cache)
    entries = sorted(p.name for p in cache.iterdir() if not p.name.endswith((".lock", "-atime")))
    assert len(entries) >= 3  # the learner step, the acting step, the forward pass
    second = _run({"UNIRL_JAX_CACHE_DIR": str(cache)})  # every step from the cache
    uncached = _run({"UNIRL_JAX_CACHE_DIR": ""})
    assert uncached["dir"] is None
    assert first["digest"] == second["digest"] == uncached["digest"]
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith((".lock", "-atime"))) == entries


def test_the_cache_folder_rules(monkeypatch, tmp_path):
    from unirl import kernels
    from unirl.frameworks import jax as jax_adapter

    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.delenv("UNIRL_JAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    import jax

    assert jax_adapter.compilation_cache_dir() == os.path.join(str(tmp_path), "unirl",
                                                               f"jax-{jax.__version__}-{kernels.cpu_tag()}")
    assert len(kernels.cpu_tag()) == 12 and kernels.cpu_tag() == kernels.cpu_tag()
    monkeypatch.setenv("UNIRL_JAX_CACHE_DIR", "")
    assert jax_adapter.compilation_cache_dir() is None
    monkeypatch.setenv("UNIRL_JAX_CACHE_DIR", "/somewhere")
    assert jax_adapter.compilation_cache_dir() == "/somewhere"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/theirs")
    assert jax_adapter.compilation_cache_dir() is None  # JAX reads its own variable itself
