"""Kernel-path pins: the one place that fixes, before a framework is imported, the code paths that vary by CPU.

Math libraries pick their kernels by the CPU they find (instruction set, vendor), and kernels for
different instruction sets may sum in a different order, so the same program can give other last
bits on another machine. Where a library offers a switch, it is set here, once, as an
environment variable read when the library loads:

- `MKL_CBWR=COMPATIBLE,STRICT`: MKL's conditional numerical reproducibility (torch's BLAS on x86).
  MKL otherwise picks its kernels by CPU model and vendor (AVX-512 on an Intel Xeon, other
  branches on AMD). COMPATIBLE is MKL's SSE2 branch without the approximate-reciprocal
  instructions (rcpps/rsqrtps, whose results differ between vendors), and the only named branch
  MKL honours on a non-Intel CPU: on an AMD EPYC it ignores `AVX2` and falls back to `AUTO`
  (its own dispatch; `MKL_VERBOSE` prints `CNR:AUTO`), which gave other bits than the Intel
  Xeon's AVX2 branch (2026-12-04). STRICT makes it independent of the data's alignment too.
  `mkl_branch()` reads back the branch MKL actually took.
- `ATEN_CPU_CAPABILITY=avx2`: torch's own vectorised kernels (tanh, reductions, softmax) come in
  AVX2 and AVX-512 builds chosen by CPU; this picks the AVX2 one everywhere.
- `ONEDNN_MAX_CPU_ISA=AVX2` (and its older name `DNNL_MAX_CPU_ISA`): caps oneDNN (used by torch
  for some ops, and by TF when its oneDNN ops are on) at AVX2.
- `XLA_FLAGS`: `--xla_cpu_max_isa=AVX2` caps the instruction set of the code XLA (TF, JAX)
  generates; `--xla_cpu_multi_thread_eigen=false` keeps its Eigen kernels single-threaded.
- `TF_ENABLE_ONEDNN_OPTS=0`: TF's eager kernels skip oneDNN (compiled functions run on XLA).

A value the user already set wins (it is recorded as theirs). The instruction-set pins are set
only on x86-64 CPUs with AVX2. Call `pin()` before importing torch, tensorflow or jax (each
adapter module does, at its top); the variables reach worker processes through the environment.
`settings()` says what is in effect, for the run directory. NumPy's OpenBLAS (`OPENBLAS_CORETYPE`)
is only recorded: it is read when NumPy is first imported, before any adapter, and moved no bit
of unirl's results on the test machine. Which pins change bits, and what they cost, is measured
in docs/determinism.md.
"""
from __future__ import annotations

import hashlib
import os
import platform
import sys

#: Environment variables pinned, with the value unirl sets when the user has not set one.
PINNED_ENV = {
    "MKL_CBWR": "COMPATIBLE,STRICT",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "TF_ENABLE_ONEDNN_OPTS": "0",
}

#: Pins that name an x86 instruction set: set only on x86-64 CPUs that have AVX2 (elsewhere the
#: libraries would refuse the value or have no such branch).
X86_ONLY = ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")

#: Recorded, not set: NumPy's OpenBLAS reads it when NumPy is first imported, before any
#: adapter; changing it moved no bit of unirl's results on the test machine (see docs/determinism.md).
RECORDED_ENV = ("OPENBLAS_CORETYPE",)

#: XLA flags (TF and JAX read XLA_FLAGS once per process, so both must ask for the same): Eigen's
#: single-threaded kernels, generated code capped at AVX2, and no XNNPACK/YNNPACK fusions. jaxlib
#: 0.10's XLA hands dots and reductions to YNNPACK by default (`__ynn_fusion`), and YNNPACK picks
#: its micro-kernels by the CPU it finds at run time, past the ISA cap: a 4-iteration PPO run ended
#: with other JAX weights on an AMD EPYC without AVX-512 than on one with it (TF's XLA, which fuses
#: nothing into YNNPACK, gave the same bits on both). With the fusions off, dots run in Eigen as
#: compiled into the wheel and everything else in code generated for the capped ISA.
XLA_FLAGS = ("--xla_cpu_multi_thread_eigen=false", "--xla_cpu_max_isa=AVX2",
             "--xla_cpu_experimental_ynn_fusion_type=", "--xla_cpu_experimental_xnn_fusion_type=")

#: Libraries that read the variables above when they load; a pin set after one of them loaded
#: may not apply to it, and `settings()` says so.
_READERS = {
    "MKL_CBWR": ("torch",),
    "ATEN_CPU_CAPABILITY": ("torch",),
    "ONEDNN_MAX_CPU_ISA": ("torch", "tensorflow"),
    "DNNL_MAX_CPU_ISA": ("torch", "tensorflow"),
    "TF_ENABLE_ONEDNN_OPTS": ("tensorflow",),
    "XLA_FLAGS": ("jax", "tensorflow"),
}

_record: dict[str, dict] = {}


def _add_xla_flags(flags) -> tuple[str, list[str]]:
    current = os.environ.get("XLA_FLAGS", "")
    missing = [f for f in flags if f.split("=")[0] not in current]
    if missing:
        os.environ["XLA_FLAGS"] = " ".join([current] + missing).strip()
    return os.environ["XLA_FLAGS"], missing


def x86_avx2() -> bool:
    """True on an x86-64 CPU with AVX2 (read from /proc/cpuinfo where there is one)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "avx2" in line.split()
    except OSError:
        pass
    return True  # x86-64 without /proc/cpuinfo (macOS, Windows): every such CPU in use since 2013 has AVX2


def cpu_tag() -> str:
    """A short name for this CPU model and its instruction sets (the first 12 hex digits of the
    SHA-256 of /proc/cpuinfo's model name and flags, or of platform.processor() elsewhere)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "flags", "vendor_id") and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    text = "|".join(fields[k] for k in sorted(fields)) or f"{platform.machine()}|{platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _xla_flags() -> tuple[str, ...]:
    return XLA_FLAGS if x86_avx2() else tuple(f for f in XLA_FLAGS if "max_isa" not in f)


def pin() -> dict[str, dict]:
    """Set the pins (user values win); idempotent. Returns `settings()`."""
    x86 = x86_avx2()
    for name, value in PINNED_ENV.items():
        if name in _record:
            continue
        user = os.environ.get(name)
        if user is None and (x86 or name not in X86_ONLY):
            os.environ[name] = value
        _record[name] = {"value": os.environ.get(name),
                         "set_by": "user" if user is not None else "unirl" if name in os.environ else "unset",
                         "late_for": sorted(m for m in _READERS.get(name, ()) if m in sys.modules)}
    value, added = _add_xla_flags(_xla_flags())
    entry = _record.setdefault("XLA_FLAGS", {"set_by": "unirl" if added else "user", "added": [],
                                             "late_for": sorted(m for m in _READERS["XLA_FLAGS"] if m in sys.modules)})
    entry["value"] = value
    entry["added"] = sorted(set(entry["added"]) | set(added))
    return settings()


def settings() -> dict[str, dict]:
    """What is in effect: per pinned variable its value, who set it ("unirl", "user", or
    "unset" before `pin()`), and the libraries that had already loaded when it was set
    (`late_for`, for which it may not apply). JSON-ready, for the run directory."""
    out = {}
    for name in list(PINNED_ENV) + ["XLA_FLAGS"] + list(RECORDED_ENV):
        if name in _record:
            out[name] = dict(_record[name])
        else:
            value = os.environ.get(name)
            out[name] = {"value": value, "set_by": "user" if value is not None else "unset", "late_for": []}
    branch = mkl_branch()
    if branch is not None:
        out["MKL_CBWR"]["effective"] = branch  # what MKL took: "AUTO" where it could not honour the request
    return out


#: MKL's CNR branch codes (mkl_service.h: MKL_CBWR_OFF, MKL_CBWR_BRANCH_OFF, MKL_CBWR_AUTO, ...).
_MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1",
                 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1",
                 14: "AVX512_E1"}


def mkl_branch() -> str | None:
    """The CNR branch torch's MKL actually runs ("COMPATIBLE" with the pin), or None where torch
    has no MKL or is not loaded. MKL takes a branch it cannot honour on this CPU as "AUTO"
    without a word, so the request (`MKL_CBWR`) alone does not say what ran."""
    if "torch" not in sys.modules:
        return None
    import ctypes

    torch = sys.modules["torch"]
    try:
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        get = lib.mkl_serv_cbwr_get  # torch links MKL statically and exports its service layer
    except (OSError, AttributeError):
        return None
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    torch.ones(2, 2) @ torch.ones(2, 2)  # MKL reads MKL_CBWR at its first call
    return _MKL_BRANCHES.get(get(1), str(get(1)))  # 1 = MKL_CBWR_BRANCH: the branch part of the setting


def weights_digest(flat) -> str:
    """A short fingerprint of a weight vector: the first 16 hex digits of the SHA-256 of its float32 little-endian bytes.

    Two runs (on two machines, backends or clusters) that end with bit-identical weights have the
    same digest; any differing bit changes it. The vector is flattened and cast to float32 first,
    so any array of the same float32 values in the same order gives the same digest.
    """
    import numpy as np

    data = np.ascontiguousarray(np.asarray(flat, dtype=np.float32).ravel(), dtype="<f4")
    return hashlib.sha256(data.tobytes()).hexdigest()[:16]
