"""`import unirl` imports no deep-learning framework and no backend library."""
import subprocess
import sys


def test_import_unirl_loads_no_framework_or_backend():
    code = ("import sys, unirl, unirl.cli, unirl.config, unirl.algorithm, unirl.backends, unirl.algorithms.ppo\n"
            "import unirl.benchmarks, unirl.benchmarks.frameworks, unirl.benchmarks.backends\n"
            "heavy = [m for m in ('torch', 'tensorflow', 'jax', 'ray', 'mpi4py') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_algorithms_do_not_import_frameworks():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent / "algorithms"
    pattern = re.compile(r"^\s*(import|from)\s+(torch|tensorflow|jax|ray|mpi4py)\b", re.M)
    offenders = [p.name for p in root.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
