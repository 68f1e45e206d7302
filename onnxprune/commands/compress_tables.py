"""Tables and lines ``onnxprune compress`` prints: search result, widths, bits, latency passes, finalist tuning."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from onnxprune.commands._tables import cost_table
from onnxprune.pipeline.compressing import CompressReport
from onnxprune.report import FinalistTuning


def search_table(report: CompressReport) -> Table:
    """The search result: costs before/after, validation top-1, BOPs and the finalists."""
    agent = report.agent if report.agmc_pool is None else f"{report.agent} {report.agmc_pool}"
    table = cost_table(f"{Path(report.source).name} -> {report.output.name} ({agent}, "
                       f"{report.episodes} episodes, {report.search_seconds:.1f} s)",
                       report.before, report.after, report.bytes_before, report.bytes_after)
    if report.latency_ms is not None:
        before_ms, after_ms = report.latency_ms
        table.add_row("Conv/Gemm ms (table)", f"{before_ms:.3f}", f"{after_ms:.3f}", f"{after_ms / before_ms:.3f}")
    if report.accuracy_before is not None and report.accuracy_after is not None:
        table.add_row("val top-1 %", f"{report.accuracy_before:.2f}", f"{report.accuracy_after:.2f}",
                      f"{report.accuracy_after - report.accuracy_before:+.2f}")
        if report.provider is not None:
            table.caption = f"scored with ONNX Runtime {report.provider}"
    if report.quant is not None:
        q = report.quant
        table.add_row("GBOPs vs float32", f"{q['input_bops_float32'] / 1e9:.3f}", f"{q['bops'] / 1e9:.3f}",
                      f"{1 - q['reduction_vs_input_float32']:.4f}")
        table.add_row("GBOPs vs all-int8", f"{q['input_bops_int8'] / 1e9:.3f}", f"{q['bops'] / 1e9:.3f}",
                      f"{q['ratio_vs_input_int8']:.4f}")
        table.add_row("bytes (weights at bits)", f"{q['input_bytes_float32']:,}", f"{q['bytes']:,}",
                      f"{q['bytes'] / q['input_bytes_float32']:.4f}")
    if report.accuracy_unrepaired is not None:
        table.add_row("  as searched", "", f"{report.accuracy_unrepaired:.2f}", f"{report.repair_seconds:.1f} s")
    if len(report.finalists) > 1:
        scores = ", ".join("-" if b is None else f"{b:.2f}" for _, _, b in report.finalists)
        table.add_row("  finalists repaired", "", scores, f"episode {report.best.index}")
    return table


def widths_table(report: CompressReport) -> Table:
    """Channels per prunable group before and after."""
    table = Table(title="channels per prunable group")
    for column in ("group", "before", "after", "removed"):
        table.add_column(column, justify="right")
    for g in report.groups:
        table.add_row(str(g.id), str(g.before), str(g.after), f"{1 - g.after / g.before:.0%}")
    return table


def bits_table(report: CompressReport) -> Table:
    """Weight/activation bits, MACs and BOPs per quantized layer."""
    table = Table(title="bits per layer (simulated)")
    for column in ("layer", "w bits", "a bits", "MACs", "BOPs"):
        table.add_column(column, justify="right")
    for row in (report.quant or {}).get("layers", ()):
        table.add_row(row["node"], str(row["w_bits"]), str(row["a_bits"]), f"{row['macs']:,}", f"{row['bops']:,}")
    return table


def print_latency(report: CompressReport, console: Console) -> None:
    """Each measured latency pass, why the table and the measurement differ, and the int8 model."""
    check = report.latency_check or {}
    for p in check.get("passes", ()):
        predicted = p.get("predicted_removed")
        pred = f"predicted {predicted:.1%} removed, " if predicted is not None else ""
        console.print(f"latency pass {p['pass']} (batch {p['batch']}): {pred}measured {1 - (p['ratio'] or 1):.1%} "
                      f"removed ({p['ms']:.3f} vs {p['baseline_ms']:.3f} ms, {p['verdict']})")
    if check.get("why"):
        console.print(f"why measured and table differ: {check['why']}")
    if report.int8 is not None:
        q, row = report.int8, report.int8["latency"]
        acc = (f", top-1 {100 * q['accuracy_float']:.2f} -> {100 * q['accuracy_int8']:.2f} %"
               if q.get("accuracy_int8") is not None else "")
        console.print(f"wrote int8 model {q['output']} ({q['int8_layers']} int8 layers, {len(q['fallen_back'])} "
                      f"back to float{acc}; {row['speedup']:.2f}x the input at batch {row['batch']}, {row['verdict']})")


def candidates_table(tuning: FinalistTuning) -> Table:
    """Validation top-1 of each finalist before and after its short tune."""
    out = Table(title="--finetune-candidates: validation top-1 % after each finalist's short tune")
    for col in ("finalist", "file", "before", "after", ""):
        out.add_column(col, justify="right")
    for k, (path, rep) in enumerate(zip(tuning.files, tuning.short)):
        pct = [f"{100 * v:.2f}" if v is not None else "-" for v in (rep.top1_before, rep.top1_after)]
        out.add_row(str(k), Path(path).name, *pct, "tuned in full" if k == tuning.chosen else "")
    return out
