"""Target checks: documented op support, tensor-core widths, int4 Q/DQ, and the real ORT run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from deploy_models import TinyNet, export, qdq_model
from onnxprune.cli import main
from onnxprune.compat import make_model
from onnxprune.deploy.checks import CheckReport, check_target
from onnxprune.deploy.target_support import TENSORRT_OPS
from onnxprune.errors import UnsupportedInput
from onnxprune.io import save_model

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def _rules(report: CheckReport, severity: str) -> list[tuple[str, str]]:
    return [(f.rule, f.node) for f in report.findings if f.severity == severity]


def _single_op(op: str, domain: str = "", opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["a"], ["b"], name=f"the_{op}", domain=domain)], "g",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3, 3])],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return make_model(graph, opset_imports=imports)


@pytest.fixture(scope="module")
def tiny() -> onnx.ModelProto:
    return export(TinyNet(12))


def test_ort_cpu_runs_the_model_for_real(tiny: onnx.ModelProto) -> None:
    report = check_target(tiny, "ort-cpu", np.random.default_rng(0))
    assert report.ok and report.ran
    assert report.run.startswith("ran once on CPUExecutionProvider") and "input[1, 3, 16, 16]" in report.run
    assert _rules(report, "warning") == []  # no tensor-core rule on CPU


@pytest.mark.skipif(HAS_CUDA, reason="this machine has the CUDA EP")
def test_ort_cuda_without_cuda_says_not_run(tiny: onnx.ModelProto) -> None:
    report = check_target(tiny, "ort-cuda", np.random.default_rng(0))
    assert not report.ran and report.run == "not run: no CUDA EP"


@pytest.mark.parametrize("target", ["ort-cuda", "tensorrt"])
def test_widths_not_multiple_of_8_are_reported(tiny: onnx.ModelProto, target: str) -> None:
    report = check_target(tiny, target, np.random.default_rng(0), run=False)
    widths = [f for f in report.findings if f.rule == "tensor-core-width"]
    # conv2 writes 12 channels, the classifier reads 12; conv1's 3 input channels (the image) and
    # the classifier's 10 outputs (the graph output) are fixed by the interface: not reported
    assert [(f.node, f.message.split(" not")[0]) for f in widths] == \
        [("/conv2/Conv", "Conv output width 12"), ("/fc/Gemm", "Gemm input width 12")]
    assert check_target(export(TinyNet(16)), target, np.random.default_rng(0), run=False).findings == ()


def test_tensorrt_table_flags_undocumented_ops() -> None:
    assert "Det" not in TENSORRT_OPS and "Relu" in TENSORRT_OPS and "Conv" in TENSORRT_OPS
    report = check_target(_single_op("Det"), "tensorrt", np.random.default_rng(0))
    assert _rules(report, "error") == [("unsupported-op", "the_Det")]
    assert "not in TensorRT's ONNX operator support matrix" in report.findings[0].message
    assert report.run.startswith("not run: ") or report.ran  # no TensorRT EP, or one without its libraries
    cpu = check_target(_single_op("Det"), "ort-cpu", np.random.default_rng(0))
    assert cpu.ok and cpu.ran


def test_listed_provider_that_does_not_start_is_not_run_not_a_model_error(
        tiny: onnx.ModelProto, monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime-gpu lists the TensorRT EP even where TensorRT's libraries are absent; ORT then
    # falls back and Runtime raises RuntimeUnavailable: the model is not at fault.
    from onnxprune.deploy import runner
    from onnxprune.errors import RuntimeUnavailable

    def no_start(*_: object, **__: object) -> None:
        raise RuntimeUnavailable("--device tensorrt: ONNX Runtime could not start TensorrtExecutionProvider")

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(runner, "run_ort", no_start)
    report = check_target(tiny, "tensorrt", np.random.default_rng(0))
    assert not report.ran and report.run.startswith("not run: the TensorRT EP is listed but did not start")
    assert _rules(report, "error") == []


def test_ops_unknown_to_ort_fail_statically_and_at_run() -> None:
    report = check_target(_single_op("Frobnicate", domain="my.ops"), "ort-cpu", np.random.default_rng(0))
    assert not report.ok and not report.ran and report.run == "failed"
    rules = _rules(report, "error")
    assert ("unknown-op", "the_Frobnicate") in rules and ("run", "") in rules
    assert any("my.ops::Frobnicate" in f.message for f in report.findings)


def test_int4_qdq_per_target(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    weights_only = qdq_model(qtype=TensorProto.INT4)
    cpu = check_target(weights_only, "ort-cpu", rng)
    assert cpu.ok and cpu.ran  # ORT >= 1.19 runs int4 DQ on CPU...
    assert _rules(cpu, "warning") == [("int4-qdq", "dq_w")]  # ...but Conv gets float weights
    trt = check_target(qdq_model(qtype=TensorProto.INT4, quantize_activation=True), "tensorrt", rng, run=False)
    assert ("int4-qdq", "q_x") in _rules(trt, "error") and ("int4-qdq", "dq_w") in _rules(trt, "warning")
    monkeypatch.setattr("onnxprune.deploy.checks._ort_version", lambda: (1, 18))
    old = check_target(weights_only, "ort-cpu", rng, run=False)
    assert _rules(old, "error") == [("int4-qdq", "dq_w")] and "needs >= 1.19" in old.findings[0].message


def test_int8_qdq_zero_point_rule_for_tensorrt() -> None:
    rng = np.random.default_rng(0)
    assert check_target(qdq_model(), "tensorrt", rng, run=False).ok
    asym = check_target(qdq_model(zero_point=3), "tensorrt", rng, run=False)
    assert _rules(asym, "error") == [("qdq-zero-point", "dq_w")]
    assert check_target(qdq_model(zero_point=3), "ort-cpu", rng).ok  # ORT handles asymmetric int8


def test_hard_coded_batch_behind_a_dynamic_declaration_is_an_error() -> None:
    flat = helper.make_graph(
        [helper.make_node("Reshape", ["a", "shape"], ["b"], name="flatten")], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 2, 3])],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 6])])  # batch 1 baked in
    report = check_target(make_model(flat, opset_imports=[helper.make_opsetid("", 17)]), "ort-cpu",
                          np.random.default_rng(0))
    assert report.ran and _rules(report, "error") == [("dynamic-batch", "")]
    assert "fails at batch 3" in report.findings[0].message


def test_unknown_target_and_rankless_input() -> None:
    with pytest.raises(UnsupportedInput, match="unknown target 'coreml'"):
        check_target(_single_op("Relu"), "coreml", np.random.default_rng(0))
    norank = _single_op("Relu")
    norank.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(UnsupportedInput, match="no static rank"):
        check_target(norank, "ort-cpu", np.random.default_rng(0))


def test_cli_check_json_and_exit_codes(tmp_path: Path, tiny: onnx.ModelProto) -> None:
    path = save_model(tiny, tmp_path / "tiny.onnx")
    out = tmp_path / "report.json"
    assert main(["check", str(path), "--target", "ort-cpu", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["ran"] is True and report["target"] == "ort-cpu"
    det = save_model(_single_op("Det"), tmp_path / "det.onnx")
    assert main(["check", str(det), "--target", "tensorrt", "--json", str(out)]) == 1
    assert json.loads(out.read_text())["findings"][0]["rule"] == "unsupported-op"
