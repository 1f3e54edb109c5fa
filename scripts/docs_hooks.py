"""MkDocs hooks for unirl's documentation site: tables generated from the code at build time.

mkdocs.yml names this file under `hooks:`. A page asks for a generated table with an HTML comment
on a line of its own, so the page still reads as plain Markdown on GitHub:

- `<!-- unirl:config-table NAME -->`: the options of algorithm NAME (its config dataclass's
  fields, their types, defaults and `#:` comments), those it shares with every algorithm left out;
  `<!-- unirl:config-table NAME all -->` lists every field; `NAME {"key": value}` shows the
  defaults of a config variant (DDPG is TD3 with three keys set).
- `<!-- unirl:config-table common -->`: the options every algorithm has (`AlgorithmConfig`).
- `<!-- unirl:algorithm-table -->`: one row per registered algorithm, from its class; inline,
  `<!-- unirl:algorithm-fact NAME pattern|reproducibility|module -->` gives one cell of it.
- `<!-- unirl:config-files -->`: the tuned config files in configs/, each with the score it reached.
- `<!-- unirl:bench-matrix FILE -->`: a `unirl bench --matrix --json FILE` result as tables.

Because the tables are made from the dataclasses on every build, they cannot drift from the code.
The hook also lays out `build/docs_api_src/unirl`, a tree of links that mirrors the installed
package (backends/, algorithms/, conformance/ and benchmarks/ live beside unirl/ in the repository
and are mapped into `unirl.*` by pyproject.toml), so mkdocstrings finds `unirl.backends.base`.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_SRC = os.path.join(ROOT, "build", "docs_api_src")
#: Folders of the repository that pyproject.toml maps into the `unirl` namespace.
MAPPED = {"backends": "backends", "algorithms": "algorithms", "conformance": "conformance",
          "benchmarks": "benchmarks"}
MARKER = re.compile(r"^<!--[ \t]*unirl:([a-z-]+)[ \t]*(.*?)[ \t]*-->[ \t]*$", re.M)
INLINE = re.compile(r"<!--\s*unirl:algorithm-fact\s+(\S+)\s+(\S+)\s*-->")


def lay_out_api_source(root: str = ROOT, dest: str = API_SRC) -> str:
    """Make `dest/unirl`, links to unirl/'s entries and to the folders mapped into its namespace."""
    pkg = os.path.join(dest, "unirl")
    os.makedirs(pkg, exist_ok=True)
    wanted = {name: os.path.join(root, "unirl", name) for name in os.listdir(os.path.join(root, "unirl"))
              if name != "__pycache__"}
    wanted.update({name: os.path.join(root, folder) for name, folder in MAPPED.items()})
    for name in os.listdir(pkg):
        if name not in wanted:
            os.remove(os.path.join(pkg, name))
    for name, target in wanted.items():
        link = os.path.join(pkg, name)
        if os.path.islink(link) and os.readlink(link) == target:
            continue
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(target, link)
    return dest


def field_comments(cls) -> dict:
    """{field name: its documentation} for a dataclass, from the `#:` comment lines above each field
    (the convention of unirl's config classes), looked up in the class that defines the field."""
    docs: dict = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            lines, _ = inspect.getsourcelines(klass)
        except (OSError, TypeError):
            continue
        source = textwrap.dedent("".join(lines))
        body = ast.parse(source).body[0].body
        text = source.splitlines()
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                comment, i = [], node.lineno - 2
                while i >= 0 and text[i].strip().startswith("#:"):
                    comment.insert(0, text[i].strip()[2:].strip())
                    i -= 1
                if comment:
                    docs[node.target.id] = " ".join(comment)
    return docs


def _default(f) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _cell(value) -> str:
    if value is dataclasses.MISSING:
        return "required"
    text = json.dumps(value) if isinstance(value, (dict, list, bool)) or value is None else repr(value)
    return "`" + text.replace("|", "\\|") + "`"


def _type(f) -> str:
    t = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    return "`" + t.replace("typing.", "").replace("|", "\\|") + "`"


def _doc(text: str) -> str:
    """A comment as a table cell: pipes escaped, and brackets, which Markdown would read as links."""
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]") if text else ""


def config_rows(config_class, only_own: bool = True, overrides: dict | None = None) -> list:
    """(name, type, default, doc) per field of `config_class`; with only_own, the fields whose
    default or meaning differs from AlgorithmConfig's are kept (the options of that algorithm)."""
    from unirl.config import AlgorithmConfig

    docs = field_comments(config_class)
    base = {f.name: f for f in dataclasses.fields(AlgorithmConfig)}
    base_docs = field_comments(AlgorithmConfig)
    rows = []
    for f in dataclasses.fields(config_class):
        if not f.init or f.name.startswith("_"):
            continue
        default = (overrides or {}).get(f.name, _default(f))
        if only_own and f.name in base and default == _default(base[f.name]) \
                and docs.get(f.name) == base_docs.get(f.name):
            continue
        rows.append((f.name, _type(f), _cell(default), _doc(docs.get(f.name, ""))))
    return rows


def config_table(spec: str) -> str:
    """The Markdown table a `unirl:config-table` marker asks for."""
    import unirl
    from unirl.config import AlgorithmConfig

    name, _, rest = spec.partition(" ")
    rest = rest.strip()
    if name == "common":
        cls, only_own, overrides = AlgorithmConfig, False, None
    else:
        cls = unirl.get_algorithm_class(name).config_class
        only_own = rest != "all"
        overrides = json.loads(rest) if rest.startswith("{") else None
    rows = config_rows(cls, only_own, overrides)
    missing = [r[0] for r in rows if not r[3]]
    if missing:
        raise ValueError(f"{cls.__name__}: fields without a `#:` comment: {', '.join(missing)}")
    head = f"Generated from `{cls.__module__}.{cls.__qualname__}` when this site was built.\n\n"
    table = ["| key | type | default | meaning |", "|---|---|---|---|"]
    table += [f"| `{n}` | {t} | {d} | {doc} |" for n, t, d, doc in rows]
    return head + "\n".join(table)


def algorithm_fact(name: str, what: str) -> str:
    """One fact about a registered algorithm, read from its class: `pattern`, `reproducibility` or `module`."""
    import unirl

    cls = unirl.get_algorithm_class(name)
    if what == "pattern":
        return f"`{type(cls.execution).__name__}`"
    if what == "reproducibility":
        return str(getattr(getattr(cls, "conformance", None), "reproducibility", "not declared"))
    if what == "module":
        return f"`{cls.module_kind}`"
    raise ValueError(f"unknown algorithm fact `{what}` (pattern, reproducibility, module)")


def algorithm_table() -> str:
    """One row per registered algorithm: its execution pattern, module kind and reproducibility class."""
    import unirl
    from unirl.registry import ALGORITHMS

    rows = ["| `--run` | class | execution pattern | module | reproducibility | page |", "|---|---|---|---|---|---|"]
    for name in ALGORITHMS:
        cls = unirl.get_algorithm_class(name)
        spec = getattr(cls, "conformance", None)
        pattern = type(getattr(cls, "execution", None)).__name__
        page = name.lower().replace("_", "-") + ".md"
        link = f"[{name}]({page})" if os.path.exists(os.path.join(ROOT, "docs", "algorithms", page)) else "–"
        rows.append(f"| `{name}` | `{cls.__module__}.{cls.__qualname__}` | `{pattern}` | `{cls.module_kind}` | "
                    f"{getattr(spec, 'reproducibility', '?')} | {link} |")
    return "\n".join(rows)


def bench_matrix(path: str) -> str:
    """A `unirl bench --matrix --json` file as Markdown: its header line and one table per section."""
    with open(os.path.join(ROOT, path)) as f:
        data = json.load(f)
    out = []
    date = _git_date(path)
    if date:
        out.append(f"`{path}`, committed on {date}.")
    meta = {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
    if meta:
        out.append("Recorded with it: " + ", ".join(f"{k} `{v}`" for k, v in meta.items()) + ".")
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
            cols = [c for c in value[0] if not isinstance(value[0][c], (dict, list))]
            out.append(f"**{key}**\n\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
            for r in value:
                out[-1] += "\n| " + " | ".join(_num(r.get(c)) for c in cols) + " |"
        elif isinstance(value, dict):
            rows = [(k, v) for k, v in value.items() if not isinstance(v, (dict, list))]
            if rows:
                out.append(f"**{key}**\n\n| key | value |\n|---|---|\n"
                           + "\n".join(f"| {k} | {_num(v)} |" for k, v in rows))
    return "\n\n".join(out)


def _git_date(path: str) -> str:
    import subprocess

    try:
        return subprocess.run(["git", "log", "-1", "--format=%ad", "--date=short", "--", path], cwd=ROOT,
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _num(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return "" if v is None else str(v)


def config_files(_: str = "") -> str:
    """One row per tuned config file in configs/: algorithm, env, the score it reached and its note."""
    import glob

    import yaml

    rows = ["| file | `run` | env | reached | budget (env steps) | notes |", "|---|---|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))):
        with open(path) as f:
            data = yaml.safe_load(f)
        score = data.get("_score", {})
        rows.append(f"| `configs/{os.path.basename(path)}` | `{data.get('run', 'PPO')}` | `{data.get('env')}` | "
                    f"`{score.get('metric')}` >= {score.get('at_least')} | {score.get('within_timesteps', 0):,} | "
                    f"{_doc(' '.join(str(data.get('_doc', '')).split()))} |")
    return "\n".join(rows)


HANDLERS = {"config-files": config_files, "config-table": config_table, "algorithm-table": lambda _: algorithm_table(),
            "bench-matrix": bench_matrix}


def render_markers(markdown: str) -> str:
    """`markdown` with each unirl marker replaced by what it asks for."""
    def replace(m):
        kind, arg = m.group(1), m.group(2)
        if kind not in HANDLERS:
            raise ValueError(f"unknown unirl marker `{kind}` (known: {', '.join(HANDLERS)})")
        return HANDLERS[kind](arg)

    markdown = INLINE.sub(lambda m: algorithm_fact(m.group(1), m.group(2)), markdown)
    return MARKER.sub(replace, markdown)


#: Pages written alongside this site that join the nav once their file exists: (page, title, after).
OPTIONAL_PAGES = (("multiagent.md", "Multi-agent", "Environments"),)


def _add_optional_pages(nav: list, docs_dir: str) -> None:
    for page, title, after in OPTIONAL_PAGES:
        if not os.path.exists(os.path.join(docs_dir, page)):
            continue
        for section in nav:
            items = next(iter(section.values())) if isinstance(section, dict) else None
            if isinstance(items, list) and any(isinstance(i, dict) and after in i for i in items):
                if not any(isinstance(i, dict) and title in i for i in items):
                    index = next(n for n, i in enumerate(items) if isinstance(i, dict) and after in i)
                    items.insert(index + 1, {title: page})


# Laid out when MkDocs loads this hook, before any plugin's on_config: mkdocstrings reads its `paths` in its own
# on_config, which may run before this hook's (a fresh clone has no build/ folder yet).
lay_out_api_source()


def on_config(config, **kwargs):
    lay_out_api_source()
    if config.get("nav"):
        _add_optional_pages(config["nav"], config["docs_dir"])
    return config


def on_page_markdown(markdown, page, config, files, **kwargs):
    return render_markers(markdown)
