"""Why a compressed model may not be faster: plain-language flags from what a run measured."""

from __future__ import annotations

import logging

from onnxprune.reporting.runs import RunView

logger = logging.getLogger(__name__)

MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv", "QLinearMatMul", "ConvInteger",
                     "MatMulInteger", "MatMulNBits", "FusedConv", "FusedGemm", "FusedMatMul", "NhwcConv"})
"""Op types whose time pruning and quantization shrink directly."""
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
FAST_WIDTH = 8
"""Channel counts that are multiples of this run at full speed in ORT's kernels."""


def _ratio(before: int | float | None, after: int | float | None) -> float | None:
    return after / before if before and after is not None else None


def _width_flags(run: RunView) -> list[str]:
    odd = [(gid, after) for gid, before, after in run.groups
           if after != before and after > FAST_WIDTH and after % FAST_WIDTH]
    if not odd:
        return []
    gid, width = odd[0]
    return [f"{len(odd)} group(s) kept channel counts that are not multiples of {FAST_WIDTH} (e.g. group {gid}: "
            f"{width}); ONNX Runtime's kernels run such widths slowly: rerun compress with --round-to {FAST_WIDTH}"]


def _latency_flags(run: RunView) -> list[str]:
    flags = []
    macs = _ratio(run.before["macs"], run.after["macs"])
    rows = [r for r in run.measured if r.before_ms]
    if rows:
        last = rows[-1]
        ratio = last.after_ms / last.before_ms if last.before_ms else 1.0
        if ratio >= 1.0:
            flags.append(f"the compressed model is not faster at batch {last.batch} "
                         f"({last.after_ms:.3f} ms vs {last.before_ms:.3f} ms)")
        elif macs is not None and ratio > macs + 0.15:
            flags.append(f"latency fell to {ratio:.2f}x at batch {last.batch} while MACs fell to {macs:.2f}x: time goes "
                         "to work pruning does not shrink (see the op types below)")
        first = rows[0]
        if first.batch == 1 and first.before_ms is not None and first.before_ms < 0.05:
            flags.append(f"batch 1 runs in {first.before_ms:.3f} ms: fixed per-call overhead dominates; "
                         "compare at a larger batch")
        if run.bench_note:
            flags.append(run.bench_note)
    elif run.predicted_ms is not None and macs is not None:
        ratio = run.predicted_ms[1] / run.predicted_ms[0]
        if ratio > macs + 0.15:
            flags.append(f"predicted Conv/Gemm latency fell to {ratio:.2f}x while MACs fell to {macs:.2f}x: "
                         "narrow layers do not speed up in proportion")
    return flags


def _profile_flags(run: RunView) -> list[str]:
    flags = []
    qdq = sum(r.after_share for r in run.profile if r.op_type in QDQ_OPS)
    if qdq > 0.10:
        flags.append(f"Quantize/DequantizeLinear take {qdq:.0%} of kernel time after: they run as separate "
                     "kernels, not fused into int8 ops")
    for row in run.profile:
        ratio = row.after_ms / row.before_ms if row.before_ms else None
        if row.op_type not in MAC_OPS | QDQ_OPS and row.after_share > 0.15 and (ratio is None or ratio > 0.9):
            flags.append(f"{row.op_type} takes {row.after_share:.0%} of kernel time after and did not shrink "
                         f"({'new' if ratio is None else f'{ratio:.2f}x'}): pruning channels does not speed it up")
    return flags


def why_not_faster(run: RunView) -> list[str]:
    """Reasons, from the run's own figures, that latency may not follow MACs (empty: none found)."""
    flags = _width_flags(run) + _latency_flags(run) + _profile_flags(run)
    frozen = sum(f[2] for f in run.frozen)
    if run.before["macs"] and frozen / run.before["macs"] > 0.25:
        flags.append(f"frozen groups hold {frozen / run.before['macs']:.0%} of the MACs and cannot shrink")
    return flags
