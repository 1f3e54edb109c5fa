"""`unirl conformance`: argument parsing, progress and the matrix around the suite's runner."""
from __future__ import annotations

import argparse
import contextlib
import sys

from unirl.errors import UnirlError


def add_arguments(p) -> None:
    p.add_argument("--framework", default=None,
                   help="comma-separated: torch,tf,jax or adapter import paths pkg.module:Class (default: all three)")
    p.add_argument("--backend", default=None,
                   help="comma-separated: local,multiprocessing,ray,mpi or backend import paths pkg.module:Class "
                        "(default: all four)")
    p.add_argument("--algo", default=None,
                   help="comma-separated: registered algorithm names or import paths pkg.module:Class "
                        "(default: every registered algorithm that declares a conformance spec)")
    p.add_argument("--variants", action="store_true",
                   help="also check each algorithm's conformance variants, e.g. PPO[pendulum] (continuous actions) "
                        "and PPO[minatar] (image observations); one is picked with --algo PPO[minatar]")
    p.add_argument("--quick", action="store_true", help="the quick mode: levels 1-4 with short runs")
    p.add_argument("--levels", default=None, help="comma-separated levels to run, e.g. 1,3 (default: the mode's)")
    p.add_argument("--json", help="write the report (one record per check and combination) here")
    # Internal: record pickled RunSpecs in a launched job (see unirl.conformance.launch).
    p.add_argument("--run-specs", nargs=2, metavar=("SPECS", "OUT"), help=argparse.SUPPRESS)


def _split(value: str | None, default) -> list[str]:
    if value is None:
        return list(default)
    items = [x.strip() for x in value.split(",") if x.strip()]
    if not items:
        raise UnirlError(f"expected a comma-separated list, got {value!r}.")
    return items


def options_from_args(args):
    from unirl.conformance.runner import ALL_BACKENDS, ALL_FRAMEWORKS, SuiteOptions

    levels = None
    if args.levels:
        try:
            levels = tuple(sorted({int(x) for x in _split(args.levels, ())}))
        except ValueError:
            raise UnirlError(f"--levels takes numbers 1 to 5, got {args.levels!r}.") from None
        if not set(levels) <= {1, 2, 3, 4, 5}:
            raise UnirlError(f"--levels takes numbers 1 to 5, got {args.levels!r}.")
    algos = None if args.algo is None else _split(args.algo, ())
    if getattr(args, "variants", False):
        from unirl.conformance.runner import registered_algorithms

        algos = registered_algorithms(variants=True) if algos is None else \
            [n for a in algos for n in [a] + [v for v in registered_algorithms(variants=True) if v.startswith(a + "[")]]
    return SuiteOptions(algos=algos,
                        frameworks=_split(args.framework, ALL_FRAMEWORKS),
                        backends=_split(args.backend, ALL_BACKENDS), quick=bool(args.quick), levels=levels)


class RichProgress:
    """The runner's progress shown as a rich bar, with one line per finished check that did not pass."""

    def __init__(self, progress):
        self.progress = progress
        self.task = None

    def start(self, total):
        self.task = self.progress.add_task("starting", total=total)

    def step(self, description):
        if self.task is not None:
            from rich.markup import escape

            self.progress.update(self.task, description=escape(description))

    def advance(self, n=1):
        if self.task is not None:
            self.progress.advance(self.task, n)

    def result(self, r):
        from rich.markup import escape

        color = {"passed": "green", "failed": "bold red", "unavailable": "yellow", "skipped": "dim"}[r.status]
        text = r.line() if r.status != "passed" else r.line()[:160]
        self.progress.console.print(f"[{color}]{escape(text)}[/{color}]", highlight=False, soft_wrap=True)


def render_matrix(report, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from unirl.conformance.report import LEVELS

    styles = {"pass": "green", "FAIL": "bold red", "n/a": "yellow", "ref": "cyan", "-": "dim"}
    table = Table(title=f"unirl conformance ({'quick' if report.quick else 'full'} mode, "
                        f"{report.duration_s:.0f} s)")
    for col in ("algo", "framework", "backend"):
        table.add_column(col, overflow="fold")
    for k, name in LEVELS.items():
        table.add_column(f"L{k} {name}", justify="center")
    for a, f, b in report.rows():
        cells = [report.cell(a, f, b, k) for k in LEVELS]
        table.add_row(*[escape(str(x)) for x in (a, f, b)],  # "PPO[minatar]" is not rich markup
                      *[f"[{styles.get(c.rstrip('*'), '')}]{c}[/]" for c in cells])
    console.print(table)
    console.print("pass* = passed where it could run; n/a = unavailable here; ref = the reference of level 4; "
                  "- = not run in this mode", style="dim")


@contextlib.contextmanager
def _sigterm_exits():
    """SIGTERM raises SystemExit(143) in the suite's process, so the child job it is waiting on is killed with
    everything it started (launch.record_runs_in_child) instead of running on as an orphan."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from unirl.conformance.runner import run_suite

    if getattr(args, "run_specs", None):
        from unirl.conformance.launch import run_specs_command

        return run_specs_command(*args.run_specs)
    options = options_from_args(args)
    if options.algos is None:
        from dataclasses import replace

        from unirl.conformance.runner import registered_algorithms

        options = replace(options, algos=registered_algorithms())
    # Wide enough for the matrix when the output goes to a file or pipe (rich assumes 80 columns there).
    console = Console(width=None if sys.stdout.isatty() else 120)
    console.print(f"[bold]unirl conformance[/bold] ({'quick' if options.quick else 'full'} mode): "
                  + escape(f"{', '.join(options.algos)} x {', '.join(options.frameworks)} x {', '.join(options.backends)}"))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress, _sigterm_exits():
        report = run_suite(options, RichProgress(progress))
    render_matrix(report, console)
    reasons = report.unavailable_reasons()
    if reasons:
        console.print("unavailable:", style="yellow")
        for reason in reasons:
            console.print(f"  - {escape(reason)}", style="yellow", highlight=False)
    if args.json:
        report.write_json(args.json)
        console.print(f"report: {args.json} ({len(report.results)} records)")
    if report.failed:
        console.print(f"[bold red]{len(report.failed)} check(s) failed:[/bold red]")
        for r in report.failed:
            console.print(escape(r.line()), highlight=False, soft_wrap=True)
        return 1
    console.print(f"[green]all checks passed[/green] in {report.duration_s:.0f} s")
    return 0
