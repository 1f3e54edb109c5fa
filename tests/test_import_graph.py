"""The import graph of unirl/, algorithms/, backends/ and conformance/ has no cycle, lazy imports included.

Lazy (function-level) imports hide cycles from Python but not from a reader: the graph here
counts every import statement. Also: algorithms import no framework or backend library, and
nothing in unirl/ imports an algorithm module (the registry names them as strings).
"""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
AREAS = {"unirl": "unirl", "backends": "unirl.backends", "algorithms": "unirl.algorithms",
         "conformance": "unirl.conformance", "benchmarks": "unirl.benchmarks"}


def module_files() -> dict[str, pathlib.Path]:
    mods = {}
    for folder, prefix in AREAS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if folder == "unirl" and parts and parts[0] in ("backends", "algorithms", "conformance", "benchmarks"):
                continue
            mods[".".join([prefix] + parts)] = path
    return mods


def imports_of(path: pathlib.Path, name: str, known: set[str]) -> set[str]:
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            # a module's own package __init__ is not an edge worth counting (Python runs it first anyway)
            if t and t != name and not name.startswith(t + "."):
                out.add(t)
    return out


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {m: imports_of(p, m, known) for m, p in files.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_imports_no_algorithm():
    g = graph()
    offenders = {m: sorted(t for t in deps if t.startswith("unirl.algorithms"))
                 for m, deps in g.items() if m.startswith("unirl.") and not m.startswith(("unirl.algorithms",
                                                                                           "unirl.conformance",
                                                                                           "unirl.benchmarks"))}
    assert {m: d for m, d in offenders.items() if d} == {}


def test_algorithms_import_no_framework_or_backend_library():
    heavy = ("torch", "tensorflow", "jax", "ray", "mpi4py", "unirl.frameworks.torch", "unirl.frameworks.tf",
             "unirl.frameworks.jax", "unirl.backends")
    for path in (ROOT / "algorithms").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for n in names:
                assert not n.startswith(heavy), f"{path.name} imports {n}"
