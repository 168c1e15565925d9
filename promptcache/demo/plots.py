"""The report's two pictures: latency distribution per arm, cost per request by kind.

matplotlib runs headless (Agg backend) so the demo works on a server or in CI; it is
imported only here, only when a report is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from promptcache.demo.summary import ArmSummary, percentile

_COLOURS = {"legacy": "#c0504d", "zero-config": "#f0a030", "policy": "#4f81bd"}


def latency_plot(arms: Sequence[ArmSummary], path: Path) -> Path:
    """Cumulative distribution of request latency and time to first token per arm."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, attr, title in (
        (axes[0], "latency_s", "Request latency (streamed to the end)"),
        (axes[1], "ttft_s", "Time to first token"),
    ):
        for arm in arms:
            values = sorted(getattr(arm, attr))
            if not values:
                continue
            ys = [(i + 1) / len(values) for i in range(len(values))]
            ax.step(values, ys, where="post", label=arm.name, color=_COLOURS.get(arm.name))
            p95 = percentile(values, 95)
            ax.axvline(p95, color=_COLOURS.get(arm.name), linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("seconds (provider time; dotted: P95)")
        ax.set_ylabel("share of requests")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def cost_plot(arms: Sequence[ArmSummary], path: Path) -> Path:
    """Stacked bars: average USD per request, by token kind, per arm."""
    kinds = (
        ("uncached input", "uncached", "#7f7f7f"),
        ("cache write", "cache_write", "#f79646"),
        ("cache read", "cache_read", "#9bbb59"),
        ("output", "output", "#8064a2"),
    )
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names = [a.name for a in arms]
    bottoms = [0.0] * len(arms)
    for label, attr, colour in kinds:
        values = [getattr(a.cost, attr) for a in arms]
        ax.bar(names, values, bottom=bottoms, label=label, color=colour, width=0.55)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    for i, total in enumerate(bottoms):
        ax.text(i, total, f"${total:.4f}", ha="center", va="bottom")
    ax.set_ylabel("USD per request")
    ax.set_title("Cost per request by token kind")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="upper left", bbox_to_anchor=(1.02, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
