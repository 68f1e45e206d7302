"""Scoring with ONNX Runtime: accuracy, fidelity, fixed-batch models, session reuse, latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from evaluate_models import bare_logits, cifar_preprocessed, raw_images, tiny_classifier

from onnxprune import pipeline
from onnxprune.errors import DataError, RuntimeUnavailable
from onnxprune.evaluate import DataSpec, Protocol, Runtime, make_preprocess
from onnxprune.evaluate.metrics import AccuracyCounter, FidelityCounter


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime("cpu", threads=1)


def _dataset(tmp_path: Path, count: int = 37, seed: int = 0) -> Path:
    images = raw_images(count, seed)
    labels = np.random.default_rng(seed + 1).integers(0, 10, size=count)
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    return tmp_path / "data.npz"


def _spec(path: Path) -> DataSpec:
    return DataSpec(path=path, preprocess=make_preprocess("cifar"))


def test_accuracy_counter_counts_top1_and_top5() -> None:
    scores = np.array([[0.0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    counter = AccuracyCounter()
    counter.update(scores, np.array([9, 6]))  # row 0: top-1 hit; row 1: class 6 is 7th best
    counter.update(scores[:1], np.array([5]))  # top-5 hit only
    result = counter.result()
    assert (result.samples, result.top1_correct, result.top5_correct) == (3, 1, 2)
    assert result.top1 == pytest.approx(100 / 3) and result.top5 == pytest.approx(200 / 3)


def test_fidelity_of_identical_outputs_is_exact() -> None:
    out = np.random.default_rng(0).standard_normal((5, 10)).astype(np.float32)
    counter = FidelityCounter()
    counter.update([out], [out.copy()])
    result = counter.result()
    assert (result.agreement, result.mse, result.cosine) == (1.0, 0.0, 1.0)


def test_fidelity_mse_and_cosine_values() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    out = np.array([[0.0, 1.0], [0.0, 4.0]], np.float32)
    counter = FidelityCounter()
    counter.update([out], [ref])
    result = counter.result()
    assert result.agreement == 0.5
    assert result.mse == pytest.approx((1 + 1 + 0 + 4) / 4)
    assert result.cosine == pytest.approx((0.0 + 1.0) / 2)


def test_accuracy_matches_a_bare_ort_computation(tmp_path: Path, runtime: Runtime) -> None:
    model = tiny_classifier(tmp_path / "m.onnx")
    data = _dataset(tmp_path)
    result = pipeline.evaluate_model(model, _spec(data), runtime=runtime, batch_size=8)
    with np.load(data) as npz:
        logits = bare_logits(model, cifar_preprocessed(npz["images"]))
        expected = int(np.count_nonzero(logits.argmax(1) == npz["labels"]))
    assert result.samples == 37 and result.accuracy is not None
    assert result.accuracy.top1_correct == expected
    assert result.run.provider == "CPUExecutionProvider" and result.run.threads == 1
    assert result.run.ort_version and result.run.cpu


def test_model_against_itself_is_exactly_faithful(tmp_path: Path, runtime: Runtime) -> None:
    model = tiny_classifier(tmp_path / "m.onnx")
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(model.read_bytes())
    result = pipeline.evaluate_model(model, _spec(_dataset(tmp_path)), runtime=runtime, baseline=copy)
    assert result.fidelity is not None
    assert (result.fidelity.agreement, result.fidelity.mse) == (1.0, 0.0)
    assert result.fidelity.cosine == 1.0
    assert result.accuracy == result.baseline_accuracy


def test_perturbed_model_is_less_faithful(tmp_path: Path, runtime: Runtime) -> None:
    model = tiny_classifier(tmp_path / "m.onnx")
    proto = onnx.load(str(model))
    w2 = onnx.numpy_helper.to_array(proto.graph.initializer[2])
    noisy = w2 + np.random.default_rng(9).standard_normal(w2.shape).astype(np.float32)
    proto.graph.initializer[2].CopyFrom(onnx.numpy_helper.from_array(noisy, "w2"))
    onnx.save_model(proto, str(tmp_path / "noisy.onnx"))
    result = pipeline.evaluate_model(tmp_path / "noisy.onnx", _spec(_dataset(tmp_path, 200)), runtime=runtime,
                                     baseline=model)
    assert result.fidelity is not None and result.fidelity.agreement is not None
    assert result.fidelity.agreement < 1.0
    assert result.fidelity.mse > 0.0 and result.fidelity.cosine < 1.0


@pytest.mark.parametrize("fixed", [1, 4])
def test_fixed_batch_model_scores_the_whole_set_like_a_dynamic_one(tmp_path: Path, runtime: Runtime,
                                                                   fixed: int) -> None:
    dynamic = tiny_classifier(tmp_path / "dyn.onnx")
    static = tiny_classifier(tmp_path / "fixed.onnx", batch=fixed)
    assert runtime.session(static).fixed_batch == fixed
    spec = _spec(_dataset(tmp_path, 37))  # 37: the last chunk of a fixed batch of 4 is padded
    result = pipeline.evaluate_model(static, spec, runtime=runtime, baseline=dynamic, batch_size=10)
    assert result.samples == 37
    assert result.accuracy == result.baseline_accuracy
    assert result.fidelity is not None and result.fidelity.agreement == 1.0
    assert result.fidelity.mse < 1e-10


def test_sessions_are_reused_per_model_content(tmp_path: Path) -> None:
    rt = Runtime("cpu", threads=1)
    path = tiny_classifier(tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert rt.session(path) is rt.session(str(path))
    assert rt.session(proto) is rt.session(proto.SerializeToString())
    assert rt.session(proto) is not rt.session(path)
    assert rt.session(tiny_classifier(tmp_path / "m.onnx", seed=1)) is not rt.session(proto)


def test_cuda_request_without_the_gpu_package_is_a_clear_error() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    with pytest.raises(RuntimeUnavailable, match="onnxruntime-gpu"):
        Runtime("cuda")


def test_bench_reports_rows_ratios_memory_and_profile(tmp_path: Path, runtime: Runtime) -> None:
    model = tiny_classifier(tmp_path / "m.onnx")
    base = tiny_classifier(tmp_path / "b.onnx", seed=1)
    quick = Protocol(runs=6, warmup=2, min_time=0.0, max_time=0.0)  # exactly 6 blocks of one run
    result = pipeline.bench_model(model, runtime=runtime, baseline=base, batches=(1, 8), protocol=quick,
                                  profile_top=3)
    assert [row.batch for row in result.rows] == [1, 8]
    for row in result.rows:
        assert row.model.runs == 6 and row.baseline is not None and row.baseline.runs == 6
        assert 0 < row.model.median_ms <= row.model.p90_ms
        assert row.ratio == pytest.approx(row.model.median_ms / row.baseline.median_ms)
        assert row.blocks == 6 and row.block_runs == 1 and row.verdict in ("stable", "unstable")
        assert row.model.ci_low_ms <= row.model.median_ms <= row.model.ci_high_ms  # [min, max] of 6 runs
        assert row.ratio_low <= row.ratio_high
    assert result.memory_mb >= 0 and result.baseline_memory_mb is not None
    assert result.profile is not None and 0 < len(result.profile) <= 3
    assert "Conv" in {op.op_type for op in result.profile}
    assert sum(op.share for op in result.profile) <= 1.0 + 1e-9


def test_bench_refuses_a_batch_the_model_cannot_take(tmp_path: Path, runtime: Runtime) -> None:
    static = tiny_classifier(tmp_path / "fixed.onnx", batch=1)
    with pytest.raises(DataError, match="batch fixed to 1"):
        pipeline.bench_model(static, runtime=runtime, batches=(1, 8), warmup=0, runs=1)
