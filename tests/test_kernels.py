"""unirl.kernels: the kernel-path pins are set once, before a framework loads, and recorded; weights_digest."""
import json
import subprocess
import sys

import numpy as np
import pytest

from unirl import kernels


def _run(code, env_extra=None, drop=()):
    import os

    env = {k: v for k, v in os.environ.items() if k not in kernels.PINNED_ENV and k != "XLA_FLAGS" and k not in drop}
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_pin_sets_every_switch_once_and_records_it():
    s = _run("import json; from unirl import kernels; kernels.pin(); print(json.dumps(kernels.pin()))")
    assert set(s) >= set(kernels.PINNED_ENV) | {"XLA_FLAGS", "OPENBLAS_CORETYPE"}
    assert s["TF_ENABLE_ONEDNN_OPTS"] == {"value": "0", "set_by": "unirl", "late_for": []}
    assert "--xla_cpu_multi_thread_eigen=false" in s["XLA_FLAGS"]["value"]
    assert s["XLA_FLAGS"]["value"].count("--xla_cpu_multi_thread_eigen") == 1  # idempotent
    if kernels.x86_avx2():
        assert s["MKL_CBWR"]["value"] == "COMPATIBLE,STRICT" and s["MKL_CBWR"]["set_by"] == "unirl"
        assert s["ATEN_CPU_CAPABILITY"]["value"] == "avx2"
        assert s["ONEDNN_MAX_CPU_ISA"]["value"] == "AVX2"
        assert "--xla_cpu_max_isa=AVX2" in s["XLA_FLAGS"]["value"]
    assert s["OPENBLAS_CORETYPE"]["set_by"] == "unset"  # recorded, never set


def test_a_value_the_user_set_wins_and_is_recorded_as_theirs():
    s = _run("import json; from unirl import kernels; print(json.dumps(kernels.pin()))",
             {"MKL_CBWR": "COMPATIBLE", "XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"})
    assert s["MKL_CBWR"] == {"value": "COMPATIBLE", "set_by": "user", "late_for": []}
    assert "--xla_cpu_max_isa=SSE4_2" in s["XLA_FLAGS"]["value"]
    assert "AVX2" not in s["XLA_FLAGS"]["value"]


@pytest.mark.parametrize("framework,module", [("torch", "torch"), ("tf", "tensorflow"), ("jax", "jax")])
def test_each_adapter_pins_before_its_framework_loads(framework, module):
    import importlib.util

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    s = _run(f"import json, unirl.frameworks.{framework}; from unirl import kernels; "
             "print(json.dumps(kernels.settings()))")
    assert all(not v["late_for"] for v in s.values()), s
    assert s["TF_ENABLE_ONEDNN_OPTS"]["set_by"] == "unirl"


def test_torch_sees_the_pinned_capability():
    pytest.importorskip("torch")
    if not kernels.x86_avx2():
        pytest.skip("the ISA pins apply to x86-64 CPUs with AVX2")
    s = _run("import json, unirl.frameworks.torch, torch; print(json.dumps(torch.backends.cpu.get_cpu_capability()))")
    assert s == "AVX2"


def test_mkl_runs_the_pinned_branch_on_this_cpu():
    """MKL takes a branch it cannot honour on this CPU as AUTO without a word (AVX2 on an AMD EPYC:
    `CNR:AUTO`, other bits than an Intel Xeon's AVX2 branch). Witnessed twice: MKL's own verbose
    line for a GEMM, and `kernels.mkl_branch()` (what the run directory records)."""
    pytest.importorskip("torch")
    if not kernels.x86_avx2():
        pytest.skip("the ISA pins apply to x86-64 CPUs with AVX2")
    import os

    code = ("import json, unirl.frameworks.torch, torch; from unirl import kernels\n"
            "torch.ones(8, 8) @ torch.ones(8, 8)\n"
            "print(json.dumps([kernels.mkl_branch(), kernels.settings()['MKL_CBWR']]))")
    env = {k: v for k, v in os.environ.items() if k not in kernels.PINNED_ENV and k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**env, "MKL_VERBOSE": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    if "MKL_VERBOSE" not in out.stdout:
        pytest.skip("this torch has no MKL")
    gemm = [line for line in out.stdout.splitlines() if "SGEMM" in line]
    assert gemm and all("CNR:COMPATIBLE,STRICT" in line for line in gemm), gemm
    branch, record = json.loads(out.stdout.strip().splitlines()[-1])
    assert branch == "COMPATIBLE" and record["effective"] == "COMPATIBLE"


@pytest.mark.parametrize("framework", ["jax", "tf"])
def test_xla_hands_no_kernel_to_a_library_that_picks_by_cpu(framework):
    """XLA may fuse dots and reductions into XNNPACK/YNNPACK calls (jaxlib 0.10 does by default), whose
    micro-kernels are chosen by the CPU at run time, past --xla_cpu_max_isa (JAX's weights differed
    between AMD EPYCs with and without AVX-512). Under the pins the optimized HLO of a dense layer
    and a sum has neither."""
    pytest.importorskip("jax" if framework == "jax" else "tensorflow")
    if framework == "jax":
        code = ("import json, unirl.frameworks.jax, jax, jax.numpy as jnp, numpy as np\n"
                "f = lambda x, w: (jnp.tanh(x @ w), jnp.exp(x @ w).sum())\n"
                "x = np.ones((64, 64), np.float32)\n"
                "print(json.dumps(jax.jit(f).lower(x, x).compile().as_text()))")
    else:
        code = ("import json, unirl.frameworks.tf, tensorflow as tf\n"
                "f = tf.function(lambda x, w: (tf.tanh(x @ w), tf.reduce_sum(tf.exp(x @ w))), jit_compile=True)\n"
                "x = tf.ones((64, 64))\n"
                "print(json.dumps(f.experimental_get_compiler_ir(x, x)(stage='optimized_hlo')))")
    hlo = _run(code)
    assert "dot(" in hlo or "dot_general" in hlo  # the text is the compiled module's
    assert "_ynn_fusion" not in hlo and "_xnn_fusion" not in hlo and "xnn" not in hlo.lower(), hlo[-3000:]


def test_mkl_branch_reports_a_fallback():
    """The read-back is not an echo of the request: asking for no CNR reads back as BRANCH_OFF."""
    pytest.importorskip("torch")
    if not kernels.x86_avx2():
        pytest.skip("the ISA pins apply to x86-64 CPUs with AVX2")
    code = "import json, unirl.frameworks.torch; from unirl import kernels; print(json.dumps(kernels.mkl_branch()))"
    branch = _run(code, {"MKL_CBWR": ""})
    if branch is None:
        pytest.skip("this torch exports no MKL service layer")
    assert branch == "BRANCH_OFF"


def test_weights_digest():
    w = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    d = kernels.weights_digest(w)
    assert len(d) == 16 and int(d, 16) >= 0
    assert kernels.weights_digest(w.copy()) == d
    assert kernels.weights_digest(w.astype(np.float64)) == d  # the float32 values are what count
    assert kernels.weights_digest(w.reshape(10, 100)) == d
    v = w.copy()
    v[500] = np.nextafter(v[500], np.float32(np.inf))  # one ulp
    assert kernels.weights_digest(v) != d
    assert kernels.weights_digest(np.array([1.0, 2.0], np.float32)) == kernels.weights_digest([1.0, 2.0])
