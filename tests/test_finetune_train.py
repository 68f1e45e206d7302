"""Fine-tuning: one step lowers the loss, QAT weights stay on their grid, resume repeats the run, bad input exits 2.

The student is the bundled digits CNN pruned 60 % (its top-1 collapses), the teacher the bundled
model itself; data is scikit-learn's digits (no ../shared needed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from models.digits import digits_split
from onnxprune.cli import main
from onnxprune.errors import DataError, PlanError
from onnxprune.evaluate import DataSpec, make_preprocess
from onnxprune.finetune import GraphModule
from onnxprune.finetune.augment import augment, resolve, spatial_axes
from onnxprune.finetune.train import TrainConfig, Validation, better, distill_loss, train
from onnxprune.pipeline.finetuning import FinetuneSettings, checkpoint_path, finetune_file
from onnxprune.quantize import find_layers, uniform_plan

ROOT = Path(__file__).resolve().parents[1]
TEACHER = ROOT / "models" / "digits_cnn.onnx"
DATA_ARGS = ["--scale", "16", "--layout", "nchw"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """digits.npz (train + val of the fixed split) and the pruned student."""
    work = tmp_path_factory.mktemp("ft")
    split = digits_split()
    data = work / "digits.npz"
    np.savez(data, images=np.concatenate([split.train_images, split.val_images]),
             labels=np.concatenate([split.train_labels, split.val_labels]))
    student = work / "student.onnx"
    assert main(["prune", str(TEACHER), "--ratio", "0.6", "-o", str(student)]) == 0
    return {"data": data, "student": student, "work": work}


def _settings(data: Path, **kw: object) -> FinetuneSettings:
    config = TrainConfig(epochs=int(kw.pop("epochs", 2)), batch_size=32, lr=0.02, seed=0)
    return FinetuneSettings(data=DataSpec(path=data, preprocess=make_preprocess(None, scale=16.0, layout="nchw")),
                            val_images=300, config=config, threads=1, **kw)  # type: ignore[arg-type]


def test_one_step_lowers_the_distillation_loss(digits: dict[str, Path]) -> None:
    student, teacher = GraphModule(onnx.load(digits["student"])), GraphModule(onnx.load(TEACHER))
    split = digits_split()
    x = torch.from_numpy((split.train_images[:64, None] / 16.0).astype(np.float32))
    y = torch.from_numpy(split.train_labels[:64].astype(np.int64))
    with torch.no_grad():
        target = teacher(x)[0]
    config = TrainConfig(lr=0.05)
    optimizer = torch.optim.SGD(student.parameters(), lr=config.lr, momentum=0.9)
    before, kd_before, _ = distill_loss(student(x)[0], target, y, config)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after, kd_after, _ = distill_loss(student(x)[0], target, y, config)
    assert after.item() < before.item() and kd_after.item() < kd_before.item()


def test_finetune_recovers_accuracy_and_only_changes_numbers(digits: dict[str, Path]) -> None:
    out = digits["work"] / "tuned.onnx"
    report = finetune_file(digits["student"], TEACHER, out, _settings(digits["data"], epochs=3))
    assert report.top1_before is not None and report.top1_before < 0.5
    assert report.top1_after is not None and report.top1_after > 0.8  # the pruned model collapses to ~12 %
    assert report.select == "loss" and report.loss_before is not None and report.loss_after is not None
    assert report.loss_after < 0.5 * report.loss_before  # the kept epoch is closer to the teacher
    original, tuned = onnx.load(digits["student"]), onnx.load(out)
    onnx.checker.check_model(tuned, full_check=True)
    assert [(n.name, n.op_type, list(n.input)) for n in original.graph.node] == \
           [(n.name, n.op_type, list(n.input)) for n in tuned.graph.node]
    assert [(i.name, tuple(i.dims), i.data_type) for i in original.graph.initializer] == \
           [(i.name, tuple(i.dims), i.data_type) for i in tuned.graph.initializer]
    conv = original.graph.node[0].input[1]
    w0 = numpy_helper.to_array(next(i for i in original.graph.initializer if i.name == conv))
    w1 = numpy_helper.to_array(next(i for i in tuned.graph.initializer if i.name == conv))
    assert not np.allclose(w0, w1)
    assert checkpoint_path(out.resolve()).exists()


def test_qat_weights_stay_on_their_grid(digits: dict[str, Path]) -> None:
    layers = [q for q in find_layers(onnx.load(digits["student"]))]
    plan = uniform_plan([q.node for q in layers], 4, 8)
    out = digits["work"] / "qat.onnx"
    report = finetune_file(digits["student"], TEACHER, out, _settings(digits["data"], epochs=1, quant_plan=plan))
    tuned = onnx.load(out)
    inits = {i.name: numpy_helper.to_array(i) for i in tuned.graph.initializer}
    for layer in layers:
        w = np.moveaxis(inits[layer.weight], layer.axis, 0).reshape(inits[layer.weight].shape[layer.axis], -1)
        assert max(len(np.unique(row)) for row in w) <= 16, layer.node
    assert report.qat and report.deployable is not None and report.deployable.exists()
    onnx.checker.check_model(onnx.load(report.deployable))
    assert any(n.op_type == "DequantizeLinear" for n in onnx.load(report.deployable).graph.node)


def _module_teacher() -> Callable[[np.ndarray], np.ndarray]:
    """The bundled digits CNN as a teacher function (torch, no ONNX Runtime)."""
    module = GraphModule(onnx.load(TEACHER))

    def teacher(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(batch))[0].numpy()
    return teacher


def test_resume_after_an_interrupt_repeats_the_run(digits: dict[str, Path], tmp_path: Path) -> None:
    split = digits_split()
    x = (split.train_images[:256, None] / 16.0).astype(np.float32)
    y = split.train_labels[:256]
    teacher = _module_teacher()
    config = TrainConfig(epochs=3, batch_size=32, lr=0.02, augment="crop-flip", axes=(2, 3), seed=3)
    full = train(GraphModule(onnx.load(digits["student"])), x, y, teacher, config, checkpoint=tmp_path / "a.pt")

    def stop(log: object) -> None:
        if getattr(log, "epoch") == 0:
            raise KeyboardInterrupt

    ckpt = tmp_path / "b.pt"
    with pytest.raises(KeyboardInterrupt):
        train(GraphModule(onnx.load(digits["student"])), x, y, teacher, config, checkpoint=ckpt, on_epoch=stop)
    resumed = train(GraphModule(onnx.load(digits["student"])), x, y, teacher, config, checkpoint=ckpt, resume=True)
    assert resumed.resumed_from == 1 and len(resumed.history) == 3
    for name, value in full.values.items():
        np.testing.assert_allclose(resumed.values[name], value, rtol=0, atol=1e-6)
    other = TrainConfig(epochs=4, batch_size=32, lr=0.02, augment="crop-flip", axes=(2, 3), seed=3)
    with pytest.raises(DataError, match="other settings"):
        train(GraphModule(onnx.load(digits["student"])), x, y, teacher, other, checkpoint=ckpt, resume=True)


def test_a_collapsed_epoch_is_undone_and_runs_again_at_half_the_rate(digits: dict[str, Path]) -> None:
    split = digits_split()
    x = (split.train_images[:128, None] / 16.0).astype(np.float32)
    y = split.train_labels[:128]
    teacher = _module_teacher()
    scores = iter([0.9, 0.1, 0.92, 0.95])  # before training, epoch 1 (collapsed), epoch 1 again, epoch 2
    seen: list[dict[str, np.ndarray]] = []

    def validate(values: dict[str, np.ndarray]) -> Validation:
        seen.append({n: np.array(v) for n, v in values.items()})
        return Validation(top1=next(scores))

    module = GraphModule(onnx.load(digits["student"]))
    config = TrainConfig(epochs=2, batch_size=32, lr=0.02, seed=0, select="top1")
    result = train(module, x, y, teacher, config, validate=validate)
    assert [(e.epoch, e.undone) for e in result.history] == [(0, True), (0, False), (1, False)]
    assert result.history[1].lr == pytest.approx(result.history[0].lr / 2, rel=1e-12)
    assert result.best_epoch == 1 and result.best_top1 == 0.95
    # the rerun starts from the weights and optimizer before the undone epoch: it equals a fresh run at lr / 2
    fresh: list[dict[str, np.ndarray]] = []
    train(GraphModule(onnx.load(digits["student"])), x, y, teacher, dataclasses.replace(config, lr=0.01),
          validate=lambda v: fresh.append({n: np.array(a) for n, a in v.items()}) or Validation(top1=0.9))
    for name in seen[2]:
        np.testing.assert_allclose(seen[2][name], fresh[1][name], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("select", "kept"), [("loss", 1), ("top1", 0), ("last", 2)])
def test_the_kept_epoch_follows_select_by(digits: dict[str, Path], select: str, kept: int) -> None:
    split = digits_split()
    x = (split.train_images[:128, None] / 16.0).astype(np.float32)
    y = split.train_labels[:128]
    # before training, epochs 1-3: top-1 saturates (best at epoch 1) while the loss keeps ranking (best at 2)
    scores = iter([Validation(0.90, 1.0), Validation(0.95, 0.8), Validation(0.94, 0.5), Validation(0.93, 0.6)])
    seen: list[dict[str, np.ndarray]] = []

    def validate(values: dict[str, np.ndarray]) -> Validation:
        seen.append({n: np.array(v) for n, v in values.items()})
        return next(scores)

    config = TrainConfig(epochs=3, batch_size=32, lr=0.02, seed=0, select=select)
    result = train(GraphModule(onnx.load(digits["student"])), x, y, _module_teacher(), config, validate=validate)
    assert result.best_epoch == kept
    assert (result.best_top1, result.best_loss) == ((0.95, 0.8), (0.94, 0.5), (0.93, 0.6))[kept]
    assert (result.initial_top1, result.initial_loss) == (0.90, 1.0)
    assert [e.val_loss for e in result.history] == [0.8, 0.5, 0.6]
    for name, value in result.values.items():
        np.testing.assert_array_equal(value, seen[kept + 1][name])


def test_better_falls_back_to_the_other_score_and_keeps_ties_with_the_earlier() -> None:
    assert better(Validation(0.5, 0.1), Validation(0.9, 0.2), "loss")
    assert not better(Validation(0.9, 0.2), Validation(0.9, 0.2), "loss")  # a tie keeps the earlier values
    assert better(Validation(0.95, None), Validation(0.9, None), "loss")  # no loss: top-1 decides
    assert not better(Validation(None, 0.3), Validation(None, 0.2), "top1")  # no top-1: the loss decides
    assert better(Validation(), Validation(), "top1") and better(Validation(0.1, 9.0), Validation(0.9, 0.1), "last")
    with pytest.raises(PlanError, match="select-by"):
        TrainConfig(select="best").check(1000)


def test_augment_is_seeded_and_keeps_shape() -> None:
    batch = np.random.default_rng(0).normal(size=(8, 3, 32, 32)).astype(np.float32)
    axes = spatial_axes(batch.shape, None)
    assert axes == (2, 3) and spatial_axes((8, 32, 32, 3), None) == (1, 2) and spatial_axes((8, 10), None) is None
    a = augment(batch, "crop-flip", axes, np.random.default_rng(1))
    b = augment(batch, "crop-flip", axes, np.random.default_rng(1))
    assert a.shape == batch.shape and a.dtype == batch.dtype and np.array_equal(a, b) and not np.array_equal(a, batch)
    flipped = augment(batch, "flip", axes, np.random.default_rng(2))
    for i in range(8):
        assert np.array_equal(flipped[i], batch[i]) or np.array_equal(flipped[i], batch[i, :, :, ::-1])
    assert resolve("auto", "cifar", axes) == "crop-flip" and resolve("auto", None, axes) == "none"
    with pytest.raises(DataError):
        resolve("crop-flip", "cifar", None)


def _other_teacher(path: Path) -> Path:
    """A model with the student's input but 5 outputs per sample instead of 10."""
    w = numpy_helper.from_array(np.ones((5, 64), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Flatten", ["input"], ["f"]),
                               helper.make_node("Gemm", ["f", "w"], ["logits"], transB=1)], "t",
                              [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 5])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_bad_input_exits_2_with_one_line(digits: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    base = ["finetune", str(digits["student"]), "--epochs", "1", "--val-images", "100", *DATA_ARGS]
    wrong_shape, bad_labels = tmp_path / "shape.npz", tmp_path / "labels.npz"
    np.savez(wrong_shape, images=np.zeros((400, 7, 7), np.uint8), labels=np.zeros(400, np.int64))
    split = digits_split()
    np.savez(bad_labels, images=split.train_images, labels=split.train_labels + 10)
    cases = [
        (["--teacher", str(_other_teacher(tmp_path / "t.onnx")), "--data", str(digits["data"])], "teacher"),
        (["--teacher", str(TEACHER), "--data", str(wrong_shape)], "shape"),
        (["--teacher", str(TEACHER), "--data", str(bad_labels)], "out of range"),
    ]
    for extra, word in cases:
        out = tmp_path / "o.onnx"
        assert main([*base, *extra, "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err and "Traceback" not in err, err
        assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU: --device cuda would train")
def test_device_cuda_without_a_gpu_exits_2_with_the_fix(digits: dict[str, Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.onnx"
    assert main(["finetune", str(digits["student"]), "--teacher", str(TEACHER), "--data", str(digits["data"]),
                 *DATA_ARGS, "--epochs", "1", "--device", "cuda", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device cuda" in err and "--device cpu" in err, err
    assert not out.exists()


def test_auto_device_trains_where_torch_runs(digits: dict[str, Path]) -> None:
    out = digits["work"] / "auto.onnx"
    report = finetune_file(digits["student"], TEACHER, out, _settings(digits["data"], epochs=1, device="auto"))
    assert report.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert report.to_json()["device"] == report.device and out.exists()


def test_normalized_training_folds_back_exactly(digits: dict[str, Path]) -> None:
    from onnxprune.finetune import write_back
    from onnxprune.finetune.norm import ConvNorms, eligible_convs
    from onnxprune.evaluate import Runtime

    model = onnx.load(digits["student"])
    module = GraphModule(model)
    convs = eligible_convs(model, set(module.param_names))
    assert convs  # the digits CNN's Convs carry their own weight and bias
    norms = ConvNorms(convs, {n: module.parameter(w).shape[0] for n, (w, _) in convs.items()})
    module.add_module("norms", norms)
    module.output_hooks = norms.hooks()
    split = digits_split()
    x = (split.train_images[:128, None] / 16.0).astype(np.float32)
    reference = GraphModule(model)(torch.from_numpy(x))[0].detach().numpy()
    norms.initialize(module, x)
    module.eval()
    np.testing.assert_allclose(module(torch.from_numpy(x))[0].detach().numpy(), reference, rtol=1e-4, atol=1e-4)
    module.train()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        loss = module(torch.from_numpy(x))[0].square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    written = write_back(model, norms.folded(module))
    got = Runtime("cpu", 1).create(written).run({"input": x} if written.graph.input[0].name == "input"
                                               else {written.graph.input[0].name: x})[0]
    assert not np.allclose(got, reference, atol=1e-3)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_compress_finetune_epochs_tunes_the_written_model(digits: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out, report = tmp_path / "c.onnx", tmp_path / "c.json"
    args = ["compress", str(TEACHER), "--target", "0.6", "--agent", "uniform", "--data", str(digits["data"]),
            *DATA_ARGS, "--finetune-epochs", "2", "--finetune-val-images", "300", "--finetune-batch-size", "32",
            "--finetune-lr", "0.02", "--threads", "1", "-o", str(out), "--json", str(report)]
    assert main(args) == 0
    run = json.loads(report.read_text())
    assert (tmp_path / "c.searched.onnx").exists() and out.exists()
    assert run["finetune"]["output"] == str(out.resolve()) and len(run["finetune"]["history"]) == 2
    assert run["finetune"]["top1_after"] > run["finetune"]["top1_before"] + 0.2  # the 60 % cut collapses


def test_compress_quantize_finetune_epochs_runs_qat_at_the_searched_bits(digits: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    import json

    from onnxprune.quantize import FLOAT, QuantPlan

    out, report = tmp_path / "q.onnx", tmp_path / "q.json"
    assert main(["compress", str(TEACHER), "--quantize", "--metric", "bops", "--target", "0.9", "--agent", "uniform",
                 "--w-bits", "4", "--a-bits", "8", "--data", str(digits["data"]), *DATA_ARGS, "--val-split", "200",
                 "--finetune-epochs", "1", "--finetune-val-images", "300", "--finetune-batch-size", "32",
                 "--finetune-lr", "0.02", "--threads", "1", "-o", str(out), "--json", str(report)]) == 0
    run = json.loads(report.read_text())
    assert run["finetune"]["qat"] and run["finetune"]["source"] == str((tmp_path / "q.float.onnx").resolve())
    assert (tmp_path / "q.searched.onnx").exists() and run["finetune"]["output"] == str(out.resolve())
    plan = QuantPlan.read(str(tmp_path / "q.bits.json"))
    tuned = onnx.load(out)
    inits = {i.name: numpy_helper.to_array(i) for i in tuned.graph.initializer}
    quantized = [q for q in find_layers(onnx.load(tmp_path / "q.float.onnx")) if plan.of(q.node)[0] != FLOAT]
    assert quantized
    for layer in quantized:  # the tuned simulated model's weights lie on their 4-bit grids
        w = np.moveaxis(inits[layer.weight], layer.axis, 0).reshape(inits[layer.weight].shape[layer.axis], -1)
        assert max(len(np.unique(row)) for row in w) <= 2 ** plan.of(layer.node)[0], layer.node


def test_finetune_candidates_short_tunes_each_finalist_and_tunes_the_best(digits: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    import json

    out, report = tmp_path / "f.onnx", tmp_path / "f.json"
    assert main(["compress", str(TEACHER), "--target", "0.5", "--agent", "random", "--episodes", "4",
                 "--data", str(digits["data"]), *DATA_ARGS, "--val-split", "200", "--finalists", "3",
                 "--finetune-epochs", "1", "--finetune-candidates", "3", "--finetune-val-images", "300",
                 "--finetune-batch-size", "32", "--finetune-lr", "0.02", "--threads", "1", "-o", str(out),
                 "--json", str(report)]) == 0
    run = json.loads(report.read_text())
    cands = run["finetune_candidates"]["candidates"]
    files = [Path(c["file"]) for c in cands]
    assert len(cands) == 3 and files[0] == out.resolve() and all(f.exists() for f in files[1:])
    assert [f.name for f in files[1:]] == ["f.finalist1.onnx", "f.finalist2.onnx"]
    chosen = run["finetune_candidates"]["chosen"]
    afters = [c["top1_after"] for c in cands]
    assert afters[chosen] == max(afters)
    expected = (tmp_path / "f.searched.onnx") if chosen == 0 else files[chosen]
    assert run["finetune"]["source"] == str(expected.resolve()) and (tmp_path / "f.searched.onnx").exists()
    assert not list(tmp_path.glob("*.tmp.onnx*"))
    for f in files[1:]:  # every finalist is a finished, valid model of another plan
        onnx.checker.check_model(onnx.load(f))
    plans = {_plan(f) for f in (tmp_path / "f.searched.onnx", *files[1:])}
    assert len(plans) == 3


def _plan(path: Path) -> str:
    return next(p.value for p in onnx.load(path).metadata_props if p.key == "onnxprune.plan")


def test_finetune_candidates_bad_values_exit_2(digits: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    base = ["compress", str(TEACHER), "--target", "0.5", "--data", str(digits["data"]), *DATA_ARGS,
            "-o", str(tmp_path / "x.onnx")]
    for extra, word in ((["--finetune-candidates", "2"], "--finetune-epochs"),
                        (["--finetune-epochs", "1", "--finetune-candidates", "9"], "--finalists"),
                        (["--finetune-epochs", "1", "--finetune-candidates", "2", "--quantize", "--metric", "bops"],
                         "--quantize")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and word in err, err
        assert not (tmp_path / "x.onnx").exists()


def test_qat_defaults_to_its_lower_rate_unless_lr_is_given(digits: dict[str, Path], tmp_path: Path) -> None:
    from onnxprune.cli import build_parser
    from onnxprune.commands.finetune import settings_from
    from onnxprune.finetune.train import QAT_LR

    import json

    plan = tmp_path / "bits.json"
    layers = [q.node for q in find_layers(onnx.load(digits["student"]))]
    plan.write_text(json.dumps(uniform_plan(layers, 4, 8).to_json()))
    base = ["finetune", str(digits["student"]), "--teacher", str(TEACHER), "--data", str(digits["data"]),
            "-o", str(tmp_path / "o.onnx"), *DATA_ARGS]
    parser = build_parser()
    for extra, quant, expected in (((), None, TrainConfig().lr), ((), plan, QAT_LR), (("--lr", "0.05"), plan, 0.05)):
        args = parser.parse_args([*base, *extra])
        settings = settings_from(args, digits["data"], 1, quant_plan=quant)
        assert settings.config.lr == expected
    compress = parser.parse_args(["compress", str(TEACHER), "--target", "0.5", "--quantize", "--metric", "bops",
                                  "--finetune-epochs", "1", "-o", str(tmp_path / "c.onnx")])
    assert settings_from(compress, digits["data"], 1, "finetune_").config.lr == QAT_LR


def test_compress_quantize_int8_finetune_epochs_quantizes_the_tuned_weights(digits: dict[str, Path],
                                                                            tmp_path: Path) -> None:
    """The int8 model is made after the tune: its dequantized weights are the tuned ones, not the searched ones."""
    import json

    from onnxprune.pipeline.latency_first import int8_path

    out, report = tmp_path / "i.onnx", tmp_path / "i.json"
    assert main(["compress", str(TEACHER), "--target", "0.6", "--agent", "uniform", "--data", str(digits["data"]),
                 *DATA_ARGS, "--quantize-int8", "--max-drop", "0", "--finetune-epochs", "1",
                 "--finetune-val-images", "300", "--finetune-batch-size", "32", "--finetune-lr", "0.02",
                 "--threads", "1", "-o", str(out), "--json", str(report)]) == 0
    run = json.loads(report.read_text())
    assert run["finetune"]["output"] == str(out.resolve()) and run["int8"]["output"] == str(int8_path(out.resolve()))
    qdq = onnx.load(run["int8"]["output"])
    inits = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    tuned = {i.name: numpy_helper.to_array(i) for i in onnx.load(out).graph.initializer}
    searched = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "i.searched.onnx").graph.initializer}
    checked = 0
    for node in qdq.graph.node:
        name = node.input[0].removesuffix("_quantized")
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or inits[node.input[0]].ndim != 4:
            continue
        q, scale = inits[node.input[0]].astype(np.float32), inits[node.input[1]].reshape(-1, 1, 1, 1)
        weight = q * scale  # symmetric per-channel int8: zero point 0
        np.testing.assert_allclose(weight, tuned[name], atol=float(scale.max()) / 2 + 1e-7)
        assert np.abs(weight - searched[name]).max() > float(scale.max())
        checked += 1
    assert checked >= 2
