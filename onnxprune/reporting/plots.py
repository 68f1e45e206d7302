"""Figures of a report, drawn with matplotlib (no pyplot state) and returned as inline SVG text.

The SVG is cleaned for embedding in HTML: no XML prolog, DOCTYPE, metadata or namespace URLs,
so the page names no external address at all. Text is drawn as paths (no font is fetched).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from onnxprune.reporting.runs import Candidate, OpRow, RunView

logger = logging.getLogger(__name__)

COLORS: tuple[str, ...] = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")
"""One color per run (compare pages); the "before" bars are gray."""
BEFORE = "#b0b0b0"

_DROP = (re.compile(r"<\?xml[^>]*\?>\s*"), re.compile(r"<!DOCTYPE[^>]*>\s*"),
         re.compile(r"<metadata>.*?</metadata>\s*", re.S), re.compile(r'\s+xmlns(:\w+)?="[^"]*"'))


def to_svg(fig: Figure) -> str:
    """``fig`` as an ``<svg>`` element fit for inline HTML (deterministic ids, no URLs)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "onnxprune", "svg.fonttype": "path"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    for pattern in _DROP:
        text = pattern.sub("", text)
    return text.replace("xlink:href", "href").strip()


def _figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def group_bars(runs: Sequence[RunView]) -> str:
    """Channels per prunable group: before (gray) and after for each run, side by side."""
    ids = sorted({g[0] for r in runs for g in r.groups})
    fig, (ax,) = _figure(max(6.0, 0.5 * len(ids) + 3), 3.2)
    slot = 0.8 / (len(runs) + 1)
    before = {g[0]: g[1] for r in runs for g in r.groups}
    ax.bar([i - 0.4 + slot / 2 for i in range(len(ids))], [before[g] for g in ids], slot, color=BEFORE,
           label="before")
    for k, run in enumerate(runs):
        after = {g[0]: g[2] for g in run.groups}
        ax.bar([i - 0.4 + slot * (k + 1.5) for i in range(len(ids))], [after.get(g, 0) for g in ids], slot,
               color=COLORS[k % len(COLORS)], label=f"after ({run.label})" if len(runs) > 1 else "after")
    ax.set_xticks(range(len(ids)), [str(g) for g in ids])
    ax.set_xlabel("group")
    ax.set_ylabel("channels")
    ax.legend(fontsize=8)
    return to_svg(fig)


def bits_bars(run: RunView) -> str:
    """Weight and activation bits per layer of a quantized run."""
    names = list(run.bits)
    fig, (ax,) = _figure(max(6.0, 0.35 * len(names) + 3), 3.2)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [run.bits[n][0] for n in names], 0.4, color=COLORS[0], label="weight bits")
    ax.bar([x + 0.2 for x in xs], [run.bits[n][1] for n in names], 0.4, color=COLORS[4], label="activation bits")
    ax.set_xticks(list(xs), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("bits")
    ax.legend(fontsize=8)
    return to_svg(fig)


def _best_so_far(values: Sequence[float | None]) -> list[float | None]:
    out: list[float | None] = []
    best: float | None = None
    for v in values:
        if v is not None and (best is None or v > best):
            best = v
        out.append(best)
    return out


def search_curve(runs: Sequence[RunView]) -> str:
    """Reward, accuracy and cost per episode (dots) with the best so far (line), one color per run."""
    fig, axes = _figure(9.0, 7.0, rows=3)
    for k, run in enumerate(r for r in runs if r.history):
        color, episodes = COLORS[k % len(COLORS)], [c.index for c in run.history]
        name = f" ({run.label})" if len(runs) > 1 else ""
        for ax, values in ((axes[0], [c.reward for c in run.history]),
                           (axes[1], [c.accuracy for c in run.history])):
            ax.scatter(episodes, [v if v is not None else float("nan") for v in values], s=12, color=color,
                       alpha=0.5, label=f"episode{name}")
            ax.plot(episodes, [v if v is not None else float("nan") for v in _best_so_far(values)], color=color,
                    label=f"best so far{name}")
        axes[2].plot(episodes, [c.macs / 1e6 for c in run.history], "o-", ms=3, color=color, label=f"MACs{name}")
    axes[0].set_ylabel("reward")
    axes[1].set_ylabel("val top-1 %")
    axes[2].set_ylabel("MACs (M)")
    axes[2].set_xlabel("episode")
    latency = [(k, r) for k, r in enumerate(runs) if any(c.latency is not None for c in r.history)]
    if latency:
        twin = axes[2].twinx()
        for k, run in latency:
            twin.plot([c.index for c in run.history], [c.latency for c in run.history], "s--", ms=3,
                      color=COLORS[k % len(COLORS)], alpha=0.6, label="predicted latency ms")
        twin.set_ylabel("predicted ms")
        twin.legend(fontsize=7, loc="upper right")
    for ax in axes:
        ax.legend(fontsize=7, loc="lower right" if ax is not axes[2] else "upper left")
        ax.grid(alpha=0.3)
    return to_svg(fig)


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats (lower cost and at least the accuracy), by cost ascending."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


def _scatter(ax: Axes, run: RunView, color: str, cost: str, name: str) -> None:
    def value(c: Candidate) -> float | None:
        return c.macs / 1e6 if cost == "macs" else c.latency

    points = [(value(c), c.accuracy, c.index) for c in run.history if c.accuracy is not None and value(c) is not None]
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=14, color=color, alpha=0.45,
               label=f"candidates{name}")
    front = pareto([(p[0], p[1]) for p in points])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color=color, label=f"Pareto front{name}")
    chosen = [p for p in points if p[2] == run.chosen]
    if chosen:
        ax.scatter([chosen[0][0]], [chosen[0][1]], marker="*", s=160, color=color, edgecolor="black",
                   label=f"saved (episode {run.chosen}){name}")


def candidates(runs: Sequence[RunView]) -> str:
    """Accuracy vs MACs, and vs predicted latency where a run has it, with each run's Pareto front."""
    with_latency = any(c.latency is not None for r in runs for c in r.history)
    fig, axes = _figure(11.0 if with_latency else 6.5, 4.0, cols=2 if with_latency else 1)
    for k, run in enumerate(runs):
        name = f" ({run.label})" if len(runs) > 1 else ""
        _scatter(axes[0], run, COLORS[k % len(COLORS)], "macs", name)
        if with_latency:
            _scatter(axes[1], run, COLORS[k % len(COLORS)], "latency", name)
    axes[0].set_xlabel("MACs (M)")
    if with_latency:
        axes[1].set_xlabel("predicted Conv/Gemm latency (ms)")
    for ax in axes:
        ax.set_ylabel("val top-1 %")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return to_svg(fig)


def op_profile(rows: Sequence[OpRow]) -> str:
    """Kernel milliseconds per op type before and after (horizontal bars)."""
    rows = list(reversed(rows))
    fig, (ax,) = _figure(7.5, 0.35 * len(rows) + 1.2)
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [r.before_ms for r in rows], 0.4, color=BEFORE, label="before")
    ax.barh([y - 0.2 for y in ys], [r.after_ms for r in rows], 0.4, color=COLORS[0], label="after")
    ax.set_yticks(list(ys), [r.op_type for r in rows], fontsize=8)
    ax.set_xlabel("ORT kernel time (ms, all profiled runs)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="x")
    return to_svg(fig)
