"""Target checks: what a deployment target lacks or runs slowly in a model, and one real run.

Contract:
    requires: a checked ``onnx.ModelProto`` (as the user ships it; not normalized).
    guarantees: static findings come only from the documented support in
    :mod:`onnxprune.deploy.target_support`; for ``ort-cpu`` / ``ort-cuda`` the model is also
    loaded and run once on random inputs from the caller's generator (``ort-cuda`` only when the
    CUDA EP is present, else the report says ``not run: no CUDA EP``), and once more at batch 3
    when the batch dim is symbolic (a hard-coded batch is an error); on CUDA, nodes that ORT
    placed on the CPU are reported from its profile. The model is not modified. Models of any
    size are checked: above ``proto_limit`` (protobuf's 2 GiB) shape inference sees the skeleton
    (:mod:`onnxprune.large`) and ORT runs the model from ``source`` (its file) when given, else
    receives its tensors as arrays. With ``source``, the model's external data need not be loaded.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto

from onnxprune.deploy import runner
from onnxprune.deploy.opset import iter_nodes
from onnxprune.deploy.target_support import (
    ORT_DOMAINS, ORT_INT4_MIN_VERSION, TARGETS, TENSOR_CORE_MULTIPLE_FLOAT, TENSOR_CORE_MULTIPLE_INT8,
    TENSOR_CORE_OPS, TENSORRT_MAX_OPSET, TENSORRT_OPS)
from onnxprune.errors import RuntimeUnavailable, UnsupportedInput
from onnxprune.large import PROTOBUF_LIMIT, skeleton
from onnxprune.load import default_opset

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning", "info"]
_INT4 = (TensorProto.INT4, TensorProto.UINT4)
_MAX_ERROR_CHARS = 300
_PROBE_BATCH = 3  # a second batch size tried when the batch dim is symbolic


@dataclass(frozen=True)
class Finding:
    """One thing the target lacks (``error``) or runs slowly (``warning``), or a note (``info``).

    Attributes:
        severity: ``error``, ``warning`` or ``info``.
        rule: Short rule id, e.g. ``unsupported-op``, ``tensor-core-width``, ``int4-qdq``, ``run``.
        node: The (first) node concerned, or ``""`` for the whole model.
        message: One line naming the problem and, where there is one, the fix.
    """

    severity: Severity
    rule: str
    node: str
    message: str


@dataclass(frozen=True)
class CheckReport:
    """All findings for one target plus the outcome of the real run."""

    target: str
    findings: tuple[Finding, ...]
    run: str
    ran: bool

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return not any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"target": self.target, "ok": self.ok, "ran": self.ran, "run": self.run,
                "findings": [vars(f) for f in self.findings]}


def _grouped(nodes: dict[str, list[str]], severity: Severity, rule: str, text: str) -> list[Finding]:
    """One finding per op type: ``text`` is formatted with ``op`` and ``count``."""
    return [Finding(severity, rule, names[0], text.format(op=op, count=len(names)))
            for op, names in sorted(nodes.items())]


def _op_findings(model: onnx.ModelProto, target: str) -> list[Finding]:
    opset = default_opset(model)
    unknown: dict[str, list[str]] = defaultdict(list)
    custom: dict[str, list[str]] = defaultdict(list)
    for node in iter_nodes(model.graph):
        key = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        if node.domain in ("", "ai.onnx"):
            if target == "tensorrt":
                if node.op_type not in TENSORRT_OPS:
                    unknown[key].append(node.name)
            elif not onnx.defs.has(node.op_type) or _schema_missing(node.op_type, opset):
                unknown[key].append(node.name)
        elif target == "tensorrt" or node.domain not in ORT_DOMAINS:
            custom[key].append(node.name)
    if target == "tensorrt":
        found = _grouped(unknown, "error", "unsupported-op", "{op} ({count} node(s)) is not in TensorRT's ONNX "
                         "operator support matrix; replace it or run it through ORT's TensorRT EP with CPU fallback")
        found += _grouped(custom, "error", "unsupported-op", "custom op {op} ({count} node(s)) needs a TensorRT "
                          "plugin; register one or export without it")
        if opset > TENSORRT_MAX_OPSET:
            found.append(Finding("warning", "opset", "", f"opset {opset} is above {TENSORRT_MAX_OPSET}, the highest in "
                                 "TensorRT 10.0's support matrix; check your TensorRT version or use --opset"))
        return found
    found = _grouped(unknown, "error", "unknown-op", "{op} ({count} node(s)) is not an ONNX op at opset "
                     f"{opset} and ONNX Runtime has no kernel for it; re-export with standard ops")
    return found + _grouped(custom, "error", "unknown-op", "{op} ({count} node(s)) is in a domain ONNX Runtime "
                            "does not know; register a custom op library or export without it")


def _schema_missing(op_type: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op_type, max_inclusive_version=opset)
    except onnx.defs.SchemaError:
        return True
    return False


def _tensor_types(model: onnx.ModelProto, proto_limit: int) -> dict[str, int]:
    types = {t.name: t.data_type for t in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton(model, proto_limit))
    except Exception as exc:  # onnx raises InferenceError and plain RuntimeErrors
        logger.debug("shape inference failed: %s", exc)
        inferred = model
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            types.setdefault(node.output[0], node.attribute[0].t.data_type)
    return types


def _zero_point_nonzero(model: onnx.ModelProto, name: str, base_dir: str) -> bool:
    init = next((t for t in model.graph.initializer if t.name == name), None)
    if init is None:
        return False
    return bool(np.any(onnx.numpy_helper.to_array(init, base_dir).astype(np.int64) != 0))


def _qdq_findings(model: onnx.ModelProto, target: str, ort_version: tuple[int, int], base_dir: str,
                  proto_limit: int) -> list[Finding]:
    types = _tensor_types(model, proto_limit)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    found: list[Finding] = []
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        quant = node.input[0] if node.op_type == "DequantizeLinear" else (node.output[0])
        qtype = types.get(quant, 0) or (types.get(node.input[2], 0) if len(node.input) > 2 else 0)
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else ""
        users = sorted({c.op_type for c in consumers.get(node.output[0], [])})
        found += _qdq_node(node, target, qtype, users, ort_version,
                           bool(zero_point) and _zero_point_nonzero(model, zero_point, base_dir))
    return found


def _qdq_node(node: onnx.NodeProto, target: str, qtype: int, users: list[str], ort_version: tuple[int, int],
              nonzero_zp: bool) -> list[Finding]:
    int4 = qtype in _INT4
    gemm_only = bool(users) and set(users) <= {"MatMul", "Gemm"}
    if target == "tensorrt":
        if nonzero_zp:
            return [Finding("error", "qdq-zero-point", node.name, f"{node.op_type} has a non-zero zero point; "
                            "TensorRT needs symmetric quantization (zero point 0)")]
        if int4 and node.op_type == "QuantizeLinear":
            return [Finding("error", "int4-qdq", node.name, "int4 QuantizeLinear (int4 activations): TensorRT "
                            "supports int4 only as weight-only quantization; keep activations at 8 bits")]
        if int4 and not gemm_only:
            return [Finding("warning", "int4-qdq", node.name, f"int4 weights feed {'/'.join(users) or 'nothing'}: "
                            "TensorRT's int4 is weight-only for MatMul/Gemm; use int8 for these layers")]
        return []
    if not int4:
        return []
    need = ORT_INT4_MIN_VERSION[target]
    if ort_version < need:
        return [Finding("error", "int4-qdq", node.name, f"ONNX Runtime {ort_version[0]}.{ort_version[1]} has no int4 "
                        f"{node.op_type} kernel for {target} (needs >= {need[0]}.{need[1]}); upgrade onnxruntime")]
    if node.op_type == "DequantizeLinear" and not gemm_only:
        return [Finding("warning", "int4-qdq", node.name, f"int4 weights of {'/'.join(users) or 'nothing'} are "
                        "dequantized to float at run time (no int4 kernel): smaller file, no speed-up")]
    return []


def _weight_shape(model: onnx.ModelProto, name: str,
                  producers: dict[str, onnx.NodeProto]) -> tuple[tuple[int, ...], int] | None:
    """Shape and element type of a constant weight, looking through one DequantizeLinear."""
    inits = {t.name: t for t in model.graph.initializer}
    if name in inits:
        return tuple(inits[name].dims), inits[name].data_type
    node = producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
        return tuple(inits[node.input[0]].dims), inits[node.input[0]].data_type
    return None


def _widths(node: onnx.NodeProto, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """(input width per group, output width) of a tensor-core op's weight, None for depthwise."""
    group = next((int(a.i) for a in node.attribute if a.name == "group"), 1)
    trans_b = next((int(a.i) for a in node.attribute if a.name == "transB"), 0)
    if len(shape) < 2:
        return None
    if node.op_type == "Conv":
        in_w, out_w = shape[1], shape[0]
    elif node.op_type == "ConvTranspose":
        in_w, out_w = shape[0] // max(group, 1), shape[1] * group
    elif node.op_type == "Gemm" and trans_b:
        in_w, out_w = shape[1], shape[0]
    else:
        in_w, out_w = shape[-2], shape[-1]
    if group > 1 and in_w == 1:
        return None  # depthwise: no tensor-core path either way
    return in_w, out_w


def _width_findings(model: onnx.ModelProto) -> list[Finding]:
    producers = {out: node for node in model.graph.node for out in node.output}
    graph_inputs = {i.name for i in model.graph.input}
    graph_outputs = {o.name for o in model.graph.output}
    found: list[Finding] = []
    for node in model.graph.node:
        if node.op_type not in TENSOR_CORE_OPS or len(node.input) < 2:
            continue
        weight = _weight_shape(model, node.input[1], producers)
        widths = _widths(node, weight[0]) if weight else None
        if widths is None:
            continue
        multiple = TENSOR_CORE_MULTIPLE_INT8 if weight and weight[1] in (TensorProto.INT8, TensorProto.UINT8) \
            else TENSOR_CORE_MULTIPLE_FLOAT
        fixed = (node.input[0] in graph_inputs, node.output[0] in graph_outputs)  # set by the interface
        bad = [f"{label} {w}" for label, w, pinned in zip(("input width", "output width"), widths, fixed)
               if w % multiple and not pinned]
        if bad:
            found.append(Finding("warning", "tensor-core-width", node.name, f"{node.op_type} {' and '.join(bad)} "
                                 f"not a multiple of {multiple}: tensor cores pad or fall back; round pruned "
                                 f"widths to multiples of {multiple}"))
    return found


def _ort_version() -> tuple[int, int]:
    version = runner.import_ort().__version__.split(".")
    return int(version[0]), int(version[1])


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:_MAX_ERROR_CHARS]


def _symbolic_batch(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return value.type.tensor_type.HasField("shape") and len(dims) > 0 and not dims[0].HasField("dim_value")


def _dynamic_batch_findings(model: onnx.ModelProto, runnable: runner.ModelSource, provider: str,
                            rng: np.random.Generator, proto_limit: int) -> list[Finding]:
    """A model that declares a dynamic batch must run at another batch size too."""
    if not any(_symbolic_batch(v) for v in runner.graph_inputs(model)):
        return []
    feeds = runner.random_feeds(model, rng, batch=_PROBE_BATCH)
    try:
        result = runner.run_ort(runnable, feeds, provider=provider, proto_limit=proto_limit)
    except Exception as exc:  # ORT raises its own exception types
        return [Finding("error", "dynamic-batch", "", f"the model declares a dynamic batch but fails at batch "
                        f"{_PROBE_BATCH}: {_first_line(exc)}; re-export it without a hard-coded batch size")]
    wrong = [f"{o.name}{list(a.shape)}" for o, a in zip(model.graph.output, result.outputs)
             if _symbolic_batch(o) and (a.ndim == 0 or a.shape[0] != _PROBE_BATCH)]
    if wrong:
        return [Finding("error", "dynamic-batch", "", f"at batch {_PROBE_BATCH} the outputs {', '.join(wrong)} do "
                        "not follow the batch; re-export it without a hard-coded batch size")]
    return []


def _run_check(model: onnx.ModelProto, target: str, rng: np.random.Generator, source: Path | None,
               proto_limit: int) -> tuple[str, bool, list[Finding]]:
    ort = runner.import_ort()
    provider = {"ort-cpu": runner.CPU_EP, "ort-cuda": runner.CUDA_EP, "tensorrt": runner.TENSORRT_EP}[target]
    short = {runner.CUDA_EP: "CUDA EP", runner.TENSORRT_EP: "TensorRT EP"}.get(provider, provider)
    if provider not in ort.get_available_providers():
        return f"not run: no {short}", False, []
    runnable: runner.ModelSource = source if source is not None else model
    feeds = runner.random_feeds(model, rng)
    try:
        result = runner.run_ort(runnable, feeds, provider=provider, profile=provider != runner.CPU_EP,
                                proto_limit=proto_limit)
    except RuntimeUnavailable:  # listed by this ORT build, but its libraries (e.g. TensorRT's), GPU or driver are absent
        return f"not run: the {short} is listed but did not start (its libraries, GPU or driver are missing)", False, []
    except Exception as exc:  # ORT raises its own exception types (Fail, InvalidGraph, NotImplemented...)
        message = f"ONNX Runtime ({provider}) cannot run the model: {_first_line(exc)}"
        return "failed", False, [Finding("error", "run", "", message)]
    findings = _dynamic_batch_findings(model, runnable, provider, rng, proto_limit)
    if not all(np.all(np.isfinite(o)) for o in result.outputs if o.dtype.kind == "f"):
        findings.append(Finding("warning", "run", "", "outputs on random inputs contain NaN or Inf"))
    on_cpu: dict[str, list[str]] = defaultdict(list)
    op_of = {n.name: n.op_type for n in model.graph.node}
    for node_name, used in result.node_providers.items():
        if used == runner.CPU_EP and provider != runner.CPU_EP and node_name in op_of:
            on_cpu[op_of[node_name]].append(node_name)
    findings += _grouped(on_cpu, "warning", "cpu-fallback", "{op} ({count} node(s)) ran on the CPU, not on "
                         f"{provider}: copies between devices slow it down")
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
    return f"ran once on {provider} with random inputs {shapes}", True, findings


def check_target(model: onnx.ModelProto, target: str, rng: np.random.Generator, *, run: bool = True,
                 source: str | Path | None = None, proto_limit: int = PROTOBUF_LIMIT) -> CheckReport:
    """Check ``model`` against ``target`` (see the module contract).

    Args:
        model: The model as it will be shipped.
        target: One of :data:`TARGETS`.
        rng: Source of the random inputs for the real run.
        run: Also load and run the model in ONNX Runtime (ORT targets, and TensorRT via ORT's
            TensorRT EP when present).
        source: The model's file: ORT runs it from there, and external data not loaded into
            ``model`` is read beside it.
        proto_limit: Byte size above which the model is handled in parts (:mod:`onnxprune.large`).

    Raises:
        UnsupportedInput: unknown target, or inputs without a static rank (for the run).
    """
    if target not in TARGETS:
        raise UnsupportedInput(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    findings = _op_findings(model, target)
    ort_version = _ort_version()
    file = Path(source) if source is not None else None
    findings += _qdq_findings(model, target, ort_version, str(file.parent) if file else "", proto_limit)
    if target in ("ort-cuda", "tensorrt"):
        findings += _width_findings(model)
    run_note, ran = "not run (static checks only)", False
    if run:
        run_note, ran, run_findings = _run_check(model, target, rng, file, proto_limit)
        findings += run_findings
    order = {"error": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: order[f.severity])
    return CheckReport(target=target, findings=tuple(findings), run=run_note, ran=ran)
