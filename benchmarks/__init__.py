"""Benchmarks behind `unirl bench`: framework throughput/latency and backend latency/throughput, as ratios measured in one run.

Sections: frameworks (learner samples/s through one PPO epoch at the default batch, acting
latency on 1 and 64 observations; ratios to torch) and backends (empty-task round trip, 10 MB
to 4 workers by call and by broadcast, pipelined tasks/s, and per framework PPO sampling env
steps/s with 1 and 2 workers, PPO end to end, workers' peak RSS; ratios to local). `--backend`
selects the backend section; without it, the framework section runs. Both `--backend` and
several frameworks (or `--matrix`) run both sections and print the framework x backend table
(every number also as a ratio to torch/local), written to the JSON as `matrix`.
"""
from __future__ import annotations

import json

from unirl.errors import UnirlError


def add_arguments(p) -> None:
    p.add_argument("--framework", default=None,
                   help="comma-separated frameworks (default: torch,tf,jax, those installed)")
    p.add_argument("--backend", default=None,
                   help="comma-separated backends: runs the backend section (local is always measured as the reference)")
    p.add_argument("--matrix", action="store_true",
                   help="with --backend: also run the framework section and print the framework x backend table")
    p.add_argument("--json", help="write the records to this JSON file")
    p.add_argument("--plot", metavar="PNG", help="also draw the results to this PNG (needs matplotlib: unirl[plot])")


def _split(value: str | None, default: list[str]) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else list(default)


def run(args) -> int:
    from rich.console import Console

    console = Console()
    report: dict = {}
    if getattr(args, "plot", None):  # before measuring: a missing matplotlib or folder fails at once
        from unirl.benchmarks.plot import check_output

        check_output(args.plot)
    if args.backend:
        from unirl.benchmarks.backends import bench_backends, print_backend_table

        frameworks = _split(args.framework, ["torch"])
        matrix = getattr(args, "matrix", False) or len(frameworks) > 1
        if matrix:
            from unirl.benchmarks.frameworks import bench_frameworks, print_framework_table

            report["frameworks"] = bench_frameworks(frameworks, console=console)
            print_framework_table(report["frameworks"], console)
        records = bench_backends(_split(args.backend, []), frameworks, console=console)
        print_backend_table(records, console)
        report["backends"] = records
        if matrix:
            from unirl.benchmarks.backends import framework_backend_matrix, print_matrix_table

            report["matrix"] = framework_backend_matrix(records, report["frameworks"])
            print_matrix_table(report["matrix"], console)
    else:
        from unirl.benchmarks.frameworks import bench_frameworks, installed, print_framework_table

        frameworks = _split(args.framework, [f for f in ("torch", "tf", "jax") if installed(f)])
        records = bench_frameworks(frameworks, console=console)
        print_framework_table(records, console)
        report["frameworks"] = records
    if getattr(args, "plot", None):
        from unirl.benchmarks.plot import plot_report

        plot_report(report, args.plot)
        console.print(f"wrote {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        console.print(f"wrote {args.json}")
    return 0
