"""`unirl bench ... --plot PNG`: the benchmark's records as bar charts (matplotlib, Agg).

Frameworks: learner samples/s (higher is better) and acting latency on 1 and 64 observations
(lower is better). Backends: sampling env steps/s with 1 and 2 workers (the scaling), and the
empty-task round trip and 10 MB to 4 workers (latency, log scale). Each bar is labelled with its
value and its ratio to the reference (torch / local) measured in the same run.
"""
from __future__ import annotations

from unirl.errors import UnirlError


def check_output(path: str) -> None:
    """Raise a one-sentence error now if the PNG cannot be drawn or written later."""
    from unirl.plot import check_output as check, pyplot

    pyplot()
    check(path)


def _bars(ax, names, series, ylabel, title, fmt, log=False, ratios=None):
    import numpy as np

    width = 0.8 / len(series)
    x = np.arange(len(names))
    for i, (label, values) in enumerate(series):
        pos = x + (i - (len(series) - 1) / 2) * width
        bars = ax.bar(pos, values, width, label=label, color=f"C{i}")
        for j, (b, v) in enumerate(zip(bars, values)):
            text = fmt(v)
            if ratios is not None and ratios[i][j] is not None:
                r = ratios[i][j]
                text += f"\n{r:.2f}x" if r < 10 else f"\n{r:,.0f}x"
            ax.annotate(text, (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(x)
    ax.set_xticklabels(names)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if log:
        ax.set_yscale("log")
        top = max(max(v) for _, v in series)
        bottom = min(min(v) for _, v in series)
        ax.set_ylim(bottom / 5, top * 100)  # room for the labels and the legend
    else:
        ax.set_ylim(0, 1.4 * max(max(v) for _, v in series))
    if len(series) > 1:
        ax.legend(fontsize=8, loc="upper center", ncol=len(series))
    ax.grid(axis="y", alpha=0.3)


def plot_report(report: dict, path: str) -> None:
    """Draw a `unirl bench` report ({"frameworks": [...]} and/or {"backends": [...]}) to a PNG."""
    from unirl.plot import pyplot

    panels = []
    fw = report.get("frameworks") or []
    if fw:
        names = [r["framework"] for r in fw]
        panels.append(dict(names=names, series=[("learner", [r["learner_samples_per_s"] for r in fw])],
                           ratios=[[r.get("learner_vs_torch") for r in fw]],
                           ylabel="samples/s", title="PPO learner throughput (higher is better)",
                           fmt=lambda v: f"{v:,.0f}"))
        panels.append(dict(names=names, series=[("1 obs", [r["act_1_us"] for r in fw]),
                                                ("64 obs", [r["act_64_us"] for r in fw])],
                           ratios=[[r.get("act_1_vs_torch") for r in fw], [r.get("act_64_vs_torch") for r in fw]],
                           ylabel="µs per call", title="compute_actions latency (lower is better)",
                           fmt=lambda v: f"{v:,.0f}"))
    be = report.get("backends") or []
    if be:
        names = [r["backend"] for r in be]
        panels.append(dict(names=names, series=[("1 worker", [r["sampling_1_worker_steps_per_s"] for r in be]),
                                                ("2 workers", [r["sampling_2_workers_steps_per_s"] for r in be])],
                           ratios=[[r.get("sampling_1_worker_steps_per_s_vs_local") for r in be],
                                   [r.get("sampling_2_workers_steps_per_s_vs_local") for r in be]],
                           ylabel="env steps/s", title="sampling throughput, 16 CartPole envs per worker",
                           fmt=lambda v: f"{v / 1000:,.0f}k"))
        panels.append(dict(names=names, series=[("round trip (µs)", [r["round_trip_us"] for r in be]),
                                                ("10 MB to 4 workers (µs)", [1e3 * r["send_10mb_to_4_ms"] for r in be])]
                           + ([("10 MB broadcast (µs)", [1e3 * r["broadcast_10mb_to_4_ms"] for r in be])]
                              if all("broadcast_10mb_to_4_ms" in r for r in be) else []),
                           ratios=[[r.get("round_trip_us_vs_local") for r in be],
                                   [r.get("send_10mb_to_4_ms_vs_local") for r in be]]
                           + ([[r.get("broadcast_10mb_to_4_ms_vs_local") for r in be]]
                              if all("broadcast_10mb_to_4_ms" in r for r in be) else []),
                           ylabel="µs (log scale)", title="latency (lower is better)", log=True,
                           fmt=lambda v: f"{v:.2g}" if v < 10 else f"{v:,.0f}"))
    if not panels:
        raise UnirlError("the benchmark report has no frameworks or backends records to plot.")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, p in zip(axes[0], panels):
        _bars(ax, p["names"], p["series"], p["ylabel"], p["title"], p["fmt"], log=p.get("log", False),
              ratios=p["ratios"])
    fig.suptitle("unirl bench (ratios to the reference measured in the same run)", fontsize=10)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise UnirlError(f"cannot write `{path}`: {e.strerror or e}.") from None
    finally:
        plt.close(fig)
