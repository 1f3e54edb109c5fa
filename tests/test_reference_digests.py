"""Reference fingerprints: the same short PPO run gives the same weights on every machine.

The torch and TF digests were recorded on an AMD EPYC with AVX-512 (2026-12-04) and matched again on
an AMD EPYC without it (AVX2 only); JAX's did not (YNNPACK fusions, now switched off by the XLA pins)
and was recorded anew on the AVX2 machine. On any other x86-64 CPU with AVX2 the same run must end
with the same bits; a difference names a kernel path that still varies by CPU (docs/determinism.md
says which pins exist and how the MKL and YNNPACK ones were found). Slow: run them on each new machine kind with `pytest -m slow tests/test_reference_digests.py`.
"""
import importlib.util
import subprocess
import sys

import pytest

from unirl import kernels

#: PPO, CartPole-v1, seed 0, the library defaults, 4 iterations (1,024 env steps), local backend.
REFERENCE = {"torch": "0d39bc1802f517eb", "jax": "c79ab55b92aba8fa", "tf": "224a63c303039818"}
MODULES = {"torch": "torch", "jax": "jax", "tf": "tensorflow"}

CODE = """
import sys, unirl
algo = unirl.build("PPO", {"env": "CartPole-v1", "framework": sys.argv[1], "seed": 0})
for _ in range(4):
    algo.train()
print(algo.weights_digest())
algo.stop()
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("framework", sorted(REFERENCE))
def test_a_short_ppo_run_ends_with_the_reference_weights(framework):
    if importlib.util.find_spec(MODULES[framework]) is None:
        pytest.skip(f"{MODULES[framework]} is not installed")
    if not kernels.x86_avx2():
        pytest.skip("the reference was recorded under the x86-64 AVX2 pins")
    out = subprocess.run([sys.executable, "-c", CODE, framework], capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stderr[-2000:]
    digest = out.stdout.strip().splitlines()[-1]
    assert digest == REFERENCE[framework], (
        f"{framework}: weights digest {digest} on this CPU, {REFERENCE[framework]} on the AMD EPYC it was "
        "recorded on: some kernel path varies by CPU (docs/determinism.md)")
