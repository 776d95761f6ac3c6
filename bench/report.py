"""Statistics, the printed table, the JSON figures and the fan-out chart."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Figures = dict[str, Any]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "met" if value else "MISSED"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def table(figures: Figures) -> str:
    """Two columns, grouped by the first part of each key, in insertion order."""
    width = max(len(k) for k in figures) + 2
    lines: list[str] = []
    group = None
    for key, value in figures.items():
        head = key.split(".")[0]
        if head != group:
            lines.append("")
            group = head
        lines.append(f"{key:<{width}}{_fmt(value)}")
    return "\n".join(lines).lstrip("\n")


def write_json(path: Path, figures: Figures) -> None:
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in figures.items()}
    path.write_text(json.dumps(clean, indent=2) + "\n")


def chart(path: Path, windows: Sequence[Any], *, title: str) -> None:
    """CDF of slot → function-received delays per fan-out window, with p50/p99 marked."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for window in windows:
        delays = sorted(window.delays)
        if not delays:
            continue
        fractions = [(i + 1) / len(delays) for i in range(len(delays))]
        line = ax.plot(delays, fractions, label=f"{window.label}: {len(delays):,} calls")[0]
        for q in (50, 99):
            x = percentile(delays, q)
            ax.plot([x], [q / 100], "o", color=line.get_color())
            ax.annotate(f"p{q} {x:.2f}s", (x, q / 100), textcoords="offset points", xytext=(6, -10), fontsize=8)
    ax.axvline(5.0, color="grey", linestyle="--", linewidth=1)
    ax.text(5.05, 0.02, "5 s target", color="grey", fontsize=8)
    ax.set_xlabel("seconds from the slot to the run queued (per-user: the function receiving the call)")
    ax.set_ylabel("fraction of the minute's due users")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def throughput_chart(path: Path, figures: Figures) -> bool:
    """No-op runs/s per worker count and the API's p50/p99 per process count; False when neither ran."""
    workers = sorted(
        int(key.split(".")[1].removeprefix("workers"))
        for key in figures
        if key.startswith("noop_throughput.workers") and key.endswith(".runs_per_s")
    )
    loads = [
        (name, int(key.split(".")[2].removeprefix("processes")))
        for key in figures
        for name in ("load", "save")
        if key.startswith(f"api_load.{name}.processes") and key.endswith(".p99_ms")
    ]
    if not workers and not loads:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    rates = [figures[f"noop_throughput.workers{n}.runs_per_s"] for n in workers]
    left.bar([str(n) for n in workers], rates, color="tab:blue")
    for index, rate in enumerate(rates):
        left.annotate(f"{rate:.0f}/s", (index, rate), ha="center", xytext=(0, 3), textcoords="offset points")
    left.axhline(200, color="grey", linestyle="--", linewidth=1)
    left.text(-0.4, 203, "200 runs/s target", color="grey", fontsize=8)
    left.set_xlabel("autosync worker processes (concurrency 4 each)")
    left.set_ylabel("no-op runs per second")
    left.set_title(f"end-to-end no-op syncs, {figures.get('noop_throughput.users', 0):,} users", fontsize=10)
    labels = [f"{name}\n{count} proc." for name, count in loads]
    p50 = [figures[f"api_load.{name}.processes{count}.p50_ms"] for name, count in loads]
    p99 = [figures[f"api_load.{name}.processes{count}.p99_ms"] for name, count in loads]
    positions = list(range(len(loads)))
    right.bar([p - 0.2 for p in positions], p50, width=0.4, label="p50")
    right.bar([p + 0.2 for p in positions], p99, width=0.4, label="p99")
    right.set_xticks(positions, labels)
    right.axhline(100, color="grey", linestyle="--", linewidth=1)
    right.set_ylabel("ms per request")
    right.set_title(f"API at {figures.get('api_load.clients', 0)} concurrent clients", fontsize=10)
    right.legend(loc="upper left")
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
