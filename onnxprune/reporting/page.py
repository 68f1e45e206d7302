"""One self-contained HTML page of one run, or of several side by side (inline CSS and SVG, no script)."""

from __future__ import annotations

import html
import logging
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from onnxprune.errors import DataError
from onnxprune.reporting import plots
from onnxprune.reporting.flags import why_not_faster
from onnxprune.reporting.runs import RunView, view

logger = logging.getLogger(__name__)

SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"), ("groups", "Per-group widths and bits"), ("search", "Search curve"),
    ("candidates", "Candidates"), ("latency", "Latency by op type"), ("reproduce", "Reproduce"))
"""``(id, title)`` of every section, in page order."""

_CSS = """body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
nav a{margin-right:1em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.note{color:#8a5a00;
background:#fff6e0;padding:.4em .8em;border-left:4px solid #e0a800}.cards{display:flex;flex-wrap:wrap;gap:1.5em}
.flags li{margin:.3em 0}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap;word-break:break-all}
svg{max-width:100%;height:auto}"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _note(text: str) -> str:
    return f'<p class="note">not measured in this run: {_e(text)}</p>'


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _num(value: float | None, fmt: str = ",") -> str:
    return "-" if value is None else format(value, fmt)


def _ratio(before: float | None, after: float | None) -> str:
    return f"{after / before:.3f}x" if before and after is not None else "-"


def _latency_row(run: RunView) -> list[str]:
    rows = [r for r in run.measured if r.before_ms]
    if rows:
        r = rows[-1]
        return [f"latency ms (batch {r.batch}, measured)", f"{r.before_ms:.3f}", f"{r.after_ms:.3f}",
                _ratio(r.before_ms, r.after_ms)]
    if run.predicted_ms:
        b, a = run.predicted_ms
        return ["latency ms (Conv/Gemm table, predicted)", f"{b:.4f}", f"{a:.4f}", _ratio(b, a)]
    return ["latency", "not measured in this run", "", ""]


def _summary_table(run: RunView) -> str:
    rows: list[list[str]] = []
    if run.accuracy_before is not None and run.accuracy_after is not None:
        rows.append(["val top-1 %", f"{run.accuracy_before:.2f}", f"{run.accuracy_after:.2f}",
                     f"{run.accuracy_after - run.accuracy_before:+.2f} points"])
    else:
        rows.append(["val top-1 %", "not measured in this run (data-free)", "", ""])
    for key, label in (("macs", "MACs"), ("bops", "BOPs"), ("params", "params"), ("bytes", "bytes on disk")):
        b, a = run.before[key], run.after[key]
        rows.append([label, _num(b), _num(a), _ratio(b, a)] if b is not None and a is not None else
                    [label, "not measured in this run", "", ""])
    rows.append(_latency_row(run))
    raw = run.raw
    facts = [("agent", raw.get("agent")), ("metric / target / achieved",
              f"{raw.get('metric')} / {_num(raw.get('target'), '.0%')} / {_num(raw.get('achieved'), '.1%')}"),
             ("episodes", raw.get("episodes")), ("search seconds", _num(raw.get("search_seconds"), ".1f")),
             ("channel multiples", raw.get("round_to"))]
    for key, title in (("provider", "scored on"), ("timed_on", "timed on")):
        where = run.where if key == "provider" else run.where.get(key) or {}
        if where.get("provider"):
            facts.append((title, f"{where['provider']}, device {where.get('device', '-')}, "
                                 f"{where.get('threads', '-')} threads, {where.get('cpu', '-')}"))
    return (f"<h3>{_e(run.label)}</h3>" + _table(("", "before", "after", "after / before"), rows)
            + _table(("run", ""), facts))


def _compare_table(runs: Sequence[RunView]) -> str:
    rows = []
    for r in runs:
        acc = (f"{r.accuracy_after:.2f} ({r.accuracy_after - r.accuracy_before:+.2f})"
               if r.accuracy_after is not None and r.accuracy_before is not None else "-")
        rows.append([r.label, r.raw.get("agent", "-"), acc, *(_ratio(r.before[k], r.after[k]) for k in
                     ("macs", "bops", "params", "bytes")), _latency_row(r)[3] or "-"])
    return _table(("run", "agent", "top-1 % (change)", "MACs", "BOPs", "params", "bytes", "latency"), rows)


def _summary(runs: Sequence[RunView]) -> str:
    compare = _compare_table(runs) if len(runs) > 1 else ""
    return compare + '<div class="cards">' + "".join(f"<div>{_summary_table(r)}</div>" for r in runs) + "</div>"


def _groups(runs: Sequence[RunView]) -> str:
    parts = [plots.group_bars(runs) if any(r.groups for r in runs) else _note("no prunable group widths")]
    for run in runs:
        head = f"<h3>{_e(run.label)}</h3>" if len(runs) > 1 else ""
        frozen = (_table(("frozen group", "channels", "MACs", "reason"), run.frozen) if run.frozen
                  else "<p>no frozen groups</p>" if "frozen" in run.raw else _note("frozen groups"))
        bits = (plots.bits_bars(run) if run.quantized else
                _note("bits per layer (not quantized: every layer float32)"))
        parts.append(head + frozen + bits)
    return "".join(parts)


def _search(runs: Sequence[RunView]) -> str:
    if not any(r.history for r in runs):
        return _note("per-episode history (this JSON has no 'history')")
    missing = "".join(_note(f"{r.label}: per-episode history") for r in runs if not r.history)
    return missing + plots.search_curve(runs)


def _candidates(runs: Sequence[RunView]) -> str:
    if not any(c.accuracy is not None for r in runs for c in r.history):
        return _note("candidate accuracies (data-free run or no history)")
    latency = any(c.latency is not None for r in runs for c in r.history)
    extra = "" if latency else _note("per-candidate latency (no latency table: --metric/--reward latency)")
    return plots.candidates(runs) + extra


def _latency(runs: Sequence[RunView]) -> str:
    parts = []
    for run in runs:
        head = f"<h3>{_e(run.label)}</h3>" if len(runs) > 1 else ""
        measured = (_table(("batch", "before ms", "after ms", "after / before", "stable"),
                           [(r.batch, _num(r.before_ms, ".4f"), f"{r.after_ms:.4f}", _ratio(r.before_ms, r.after_ms),
                             "yes" if r.stable else "no") for r in run.measured]) if run.measured
                    else _note("measured latency (pass --bench BENCH.json from `onnxprune bench OUT --baseline IN "
                               "--profile --json BENCH.json`)"))
        profile = plots.op_profile(run.profile) if run.profile else _note("op-type profile (bench --profile)")
        flags = why_not_faster(run)
        items = "".join(f"<li>{_e(f)}</li>" for f in flags) or "<li>no slowdown flags from the figures measured</li>"
        parts.append(f'{head}{measured}{profile}<h4>Why it is not faster</h4><ul class="flags">{items}</ul>')
    return "".join(parts)


def _reproduce(runs: Sequence[RunView]) -> str:
    parts = []
    for run in runs:
        head = f"<h3>{_e(run.label)}</h3>" if len(runs) > 1 else ""
        command = (f"<pre>{_e(shlex.join(run.command))}</pre>" if run.command
                   else _note("the command line (older JSON)"))
        versions = (_table(("package", "version"), sorted(run.versions.items())) if run.versions
                    else _note("package versions (older JSON)"))
        files = _table(("", ""), [("model", run.raw.get("source", "-")), ("output", run.raw.get("output", "-")),
                                  ("seed", run.raw.get("seed", "-"))])
        parts.append(head + command + versions + files)
    return "".join(parts)


def render(runs: Sequence[RunView]) -> str:
    """The page of ``runs`` (one: a run report; several: a comparison)."""
    if not runs:
        raise DataError("no run JSON given; pass the file `onnxprune compress --json` wrote")
    title = (f"onnxprune report: {runs[0].label}" if len(runs) == 1
             else "onnxprune comparison: " + " vs ".join(r.label for r in runs))
    builders = {"summary": _summary, "groups": _groups, "search": _search, "candidates": _candidates,
                "latency": _latency, "reproduce": _reproduce}
    nav = "".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name in SECTIONS)
    body = "".join(f'<section id="{sid}"><h2>{_e(name)}</h2>{builders[sid](runs)}</section>' for sid, name in SECTIONS)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f"<style>{_CSS}</style></head><body><h1>{_e(title)}</h1><nav>{nav}</nav>{body}</body></html>\n")


def build_html(runs: Sequence[Mapping[str, Any]], *, labels: Sequence[str] | None = None,
               benches: Sequence[Mapping[str, Any] | None] = ()) -> str:
    """The page of compress JSON dicts ``runs`` (``benches[i]``: a ``bench --json`` dict of run ``i``'s model)."""
    names = list(labels) if labels else [_label(r, i) for i, r in enumerate(runs)]
    return render([view(r, names[i], benches[i] if i < len(benches) else None) for i, r in enumerate(runs)])


def _label(run: Mapping[str, Any], index: int) -> str:
    output = str(run.get("output") or "")
    return output.rsplit("/", 1)[-1] or f"run {index + 1}"
