"""Joint pruning + bits search (`compress --quantize`): every agent meets a BOPs / bytes target within 1 %."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxprune.quantize import QuantPlan

from models.export import export_onnx
from models.zoo import zoo_entries
from onnxprune.analyze import analyze
from onnxprune.analyze.cost import model_cost, node_macs, weight_bytes
from onnxprune.analyze.importance import weight_importance
from onnxprune.cli import main
from onnxprune.errors import PlanError
from onnxprune.load import load
from onnxprune.quantize.plan import A_BITS, W_BITS
from onnxprune.search.bits import BitSpace, JointMeter, parse_bits
from onnxprune.search.rescale import rescale_joint
from onnxprune.search.space import SearchSpace

AGENTS = ("uniform", "random", "amc", "agmc", "gnnrl")


@pytest.fixture(scope="module")
def resnet20(tmp_path_factory: pytest.TempPathFactory) -> Path:
    entry = next(e for e in zoo_entries() if e.name == "resnet20")
    path = tmp_path_factory.mktemp("joint") / "resnet20.onnx"
    export_onnx(entry.build(0), entry.input_shape, path, exporter="torchscript")
    return path


@pytest.fixture(scope="module")
def tiny_npz(tiny_cifar: Callable[[int], Path]) -> Path:
    return tiny_cifar(32)


def _written_metric(model_path: Path, plan: dict, metric: str, source: Path) -> tuple[float, float]:
    """``(value, float32 value of source)`` of the written model, from its own MACs / params and its plan's bits."""
    model, original = load(model_path), load(source)
    bits = {k: (int(v[0]), int(v[1])) for k, v in plan["bits"].items()}
    if metric == "bytes":
        return weight_bytes(model, bits), 4.0 * model_cost(original).params
    bops = sum(node_macs(n, model.shapes.get) * np.prod(bits.get(n.name, (32, 32))) for n in model.proto.graph.node)
    return float(bops), float(model_cost(original).macs) * 1024.0


def _compress(src: Path, out: Path, data: Path, agent: str, *extra: str, metric: str = "bops",
              target: str = "0.97", seed: int = 0) -> dict:
    report = out.with_suffix(".json")
    code = main(["compress", str(src), "-o", str(out), "--quantize", "--metric", metric, "--target", target,
                 "--data", str(data), "--preprocess", "cifar", "--agent", agent, "--episodes", "4", "--warmup", "1",
                 "--seed", str(seed), "--round-to", "1", "--threads", "1", "--json", str(report), *extra])
    assert code == 0
    return json.loads(report.read_text())


@pytest.mark.parametrize("agent", AGENTS)
def test_joint_search_meets_the_bops_target(tmp_path: Path, resnet20: Path, tiny_npz: Path, agent: str) -> None:
    out = tmp_path / "out.onnx"
    rep = _compress(resnet20, out, tiny_npz, agent)
    plan = rep["best"]["plan"]
    value, base = _written_metric(out, plan, "bops", resnet20)
    assert value == pytest.approx(0.03 * base, rel=0.01)
    assert abs(rep["achieved"] - 0.97) <= 0.03 * 0.01 + 1e-9
    assert plan["bits"] and all(w in W_BITS and a in A_BITS for w, a in plan["bits"].values())
    assert len(plan["bits"]) == 20  # every Conv and the Gemm (none kept float by default)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.float32)})[0]
    assert y.shape == (1, 10) and np.isfinite(y).all()
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["onnxprune.plan"])["bits"] == plan["bits"]
    assert not (tmp_path / "out.onnx.search.json").exists()
    quant = rep["quant"]  # the deployable model beside it: QDQ, valid, runs, bits as ORT stores them
    assert quant["deployable"] == str(tmp_path / "out.qdq.onnx")
    qdq = onnx.load(quant["deployable"])
    onnx.checker.check_model(qdq)
    assert any(n.op_type == "DequantizeLinear" for n in qdq.graph.node)
    assert {tuple(v) for v in quant["deployable_bits"].values()} <= {(8, 8), (4, 8), (4, 32)}
    qs = ort.InferenceSession(quant["deployable"], providers=["CPUExecutionProvider"])
    assert qs.run(None, {qs.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 10)
    # the pruned float model and its bits plan, for `onnxprune finetune --quant-plan` (QAT)
    assert QuantPlan.read(quant["bits_plan"]).bits == {k: tuple(v) for k, v in plan["bits"].items()}
    float_model = onnx.load(quant["float_model"])
    assert not any(n.op_type == "Round" for n in float_model.graph.node)
    assert {n.name for n in float_model.graph.node} >= set(plan["bits"])


def test_joint_bytes_target_and_reproducible(tmp_path: Path, resnet20: Path, tiny_npz: Path) -> None:
    runs = [_compress(resnet20, tmp_path / f"out{i}.onnx", tiny_npz, "random", metric="bytes", target="0.9")
            for i in range(2)]
    value, base = _written_metric(tmp_path / "out0.onnx", runs[0]["best"]["plan"], "bytes", resnet20)
    assert value == pytest.approx(0.1 * base, rel=0.01)
    assert runs[0]["best"]["plan"] == runs[1]["best"]["plan"]
    assert runs[0]["accuracy_after"] == runs[1]["accuracy_after"]


def test_joint_keep_float_and_allowed_sets(tmp_path: Path, resnet20: Path, tiny_npz: Path) -> None:
    out = tmp_path / "out.onnx"
    rep = _compress(resnet20, out, tiny_npz, "random", "--keep-float", "first,last", "--w-bits", "4,8",
                    "--a-bits", "8", target="0.95")
    bits = rep["best"]["plan"]["bits"]
    assert len(bits) == 18 and "/conv1/Conv" not in bits and "/linear/Gemm" not in bits
    assert {w for w, _ in bits.values()} <= {4, 8} and {a for _, a in bits.values()} == {8}
    value, base = _written_metric(out, rep["best"]["plan"], "bops", resnet20)
    assert value == pytest.approx(0.05 * base, rel=0.01)


@pytest.mark.parametrize("extra", [["--w-bits", "7"], ["--a-bits", "2,8"], ["--target", "0.9999"],
                                   ["--metric", "macs"]])
def test_joint_bad_input_is_one_line_exit_2(tmp_path: Path, resnet20: Path, tiny_npz: Path,
                                            capsys: pytest.CaptureFixture[str], extra: list[str]) -> None:
    out = tmp_path / "out.onnx"
    args = {"--metric": "bops", "--target": "0.97"}
    rest: list[str] = []
    for key, value in zip(extra[::2], extra[1::2]):
        if key in args:
            args[key] = value
        else:
            rest += [key, value]
    code = main(["compress", str(resnet20), "-o", str(out), "--quantize", "--data", str(tiny_npz), "--preprocess",
                 "cifar", "--agent", "random", "--episodes", "1", *[x for kv in args.items() for x in kv], *rest])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


def test_bops_without_quantize_is_refused(tmp_path: Path, resnet20: Path, tiny_npz: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compress", str(resnet20), "-o", str(tmp_path / "o.onnx"), "--metric", "bops", "--target", "0.9",
                 "--data", str(tiny_npz), "--preprocess", "cifar"])
    assert code == 2 and "--quantize" in capsys.readouterr().err


def test_parse_bits_refuses_outside_the_set() -> None:
    assert parse_bits("8,2,4", W_BITS, "--w-bits") == (2, 4, 8)
    with pytest.raises(PlanError, match="--w-bits 7"):
        parse_bits("4,7", W_BITS, "--w-bits")


@pytest.fixture(scope="module")
def bit_space(resnet20: Path) -> BitSpace:
    analysis = analyze(load(resnet20))
    return BitSpace.build(SearchSpace.build(analysis, weight_importance(analysis)), "bops")


def test_rescale_joint_rules(bit_space: BitSpace) -> None:
    meter = JointMeter(bit_space)
    groups = len(bit_space.space)
    # bits alone within 1 % of the goal: 4-bit weights, 8-bit activations remove 96.875 %: no pruning
    w4 = bit_space.action_of(W_BITS.index(4), "w")
    a8 = bit_space.action_of(A_BITS.index(8), "a")
    fit = rescale_joint(bit_space, meter, np.tile([0.5, w4, a8], (groups, 1)), 0.9685)
    assert fit.prune.keeps == bit_space.space.sizes and fit.raised == fit.lowered == 0
    # 2-bit everywhere overshoots a 0.97 goal: bits are raised, then pruning lands within 1 %
    fit = rescale_joint(bit_space, meter, np.tile([0.5, 0.0, 0.0], (groups, 1)), 0.97)
    assert fit.raised > 0 and abs(fit.value / fit.goal - 1) <= 0.01
    # 8/16 everywhere cannot reach 0.995 by pruning: bits are lowered first
    fit = rescale_joint(bit_space, meter, np.tile([0.5, 1.0, 1.0], (groups, 1)), 0.995)
    assert fit.lowered > 0 and abs(fit.value / fit.goal - 1) <= 0.01
    assert all(w in W_BITS and a in A_BITS for w, a in fit.bits)


def _cheap_env(bit_space: BitSpace):
    """A joint environment scored by the mean weight bits (no model built): fast DDPG / PPO updates."""
    from onnxprune.search.env import CompressionEnv

    return CompressionEnv(bit_space.space, target=0.97, metric="bops", apply=lambda plan: plan,
                          score=lambda plan: float(np.mean([w for w, _ in plan.bits.values()])) / 8.0, bits=bit_space)


@pytest.mark.parametrize("kind", ["amc", "agmc"])
def test_ddpg_joint_updates_and_replays_bits(bit_space: BitSpace, kind: str) -> None:
    from onnxprune.search.ddpg import DDPGConfig, ddpg_search
    from onnxprune.search.states import make_states

    runs = []
    for _ in range(2):
        env = _cheap_env(bit_space)
        states = make_states(kind, env, seed=3)
        assert states.dim == (13 if kind == "amc" else 130)
        state = ddpg_search(env, states, 8, seed=3, agent=kind, config=DDPGConfig(warmup=2, batch_size=16))
        runs.append(state)
    assert runs[0].to_json()["best"] == runs[1].to_json()["best"]
    assert len(runs[0].history) == 8
    for e in runs[0].top:
        assert abs(e.joint / (0.03 * JointMeter(bit_space).float_value()) - 1) <= 0.01


def test_gnnrl_joint_update_and_state(bit_space: BitSpace) -> None:
    from onnxprune.search.gnn_policy import PolicyGraph
    from onnxprune.search.ppo import PPOConfig, ppo_search

    env = _cheap_env(bit_space)
    obs = PolicyGraph(bit_space.space, "macs").observe(np.zeros(len(bit_space.space)), 0.0, 0.97,
                                                       np.tile([4.0, 8.0], (len(bit_space.space), 1)))
    assert obs.groups.shape == (len(bit_space.space), 5) and float(obs.groups[0, 3]) == 0.5
    state, _ = ppo_search(env, 6, seed=1, config=PPOConfig(episodes_per_update=3))
    assert state.next_episode == 6 and all(len(e.bits) == len(bit_space.space) for e in state.top)


def test_bit_steps_follow_the_worked_example() -> None:
    """The numbers of :func:`rescale_joint`'s docstring (three one-layer groups of 100 / 200 / 700 MACs)."""
    from types import SimpleNamespace

    from onnxprune.search.rescale import _bit_step

    macs = np.array([100.0, 200.0, 700.0])

    class Meter:
        def group_values(self, keeps: tuple[float], bits: tuple) -> np.ndarray:
            b = np.asarray(bits, dtype=np.float64)
            return macs * keeps[0] * b[:, 0] * b[:, 1]

        def value(self, keeps: tuple[float], bits: tuple) -> float:
            return float(self.group_values(keeps, bits).sum())

    space = SimpleNamespace(metric="bops", w_set=W_BITS, a_set=A_BITS,
                            bits=lambda w, a: tuple((W_BITS[int(i)], A_BITS[int(j)]) for i, j in zip(w, a)))
    meter, goal = Meter(), 0.03 * 1000 * 1024
    idx = np.array([[5, 3]] * 3)  # 8 / 16 everywhere; max-ratio pruning keeps 40 % of the MACs
    seen = []
    while meter.value((0.4,), space.bits(idx[:, 0], idx[:, 1])) > goal * 1.01:
        idx = _bit_step(space, meter, (0.4,), idx, down=True)  # type: ignore[arg-type]
        seen.append((space.bits(idx[:, 0], idx[:, 1]), meter.value((0.4,), space.bits(idx[:, 0], idx[:, 1]))))
    assert seen == [(((8, 16), (8, 16), (8, 8)), 33280.0), (((8, 16), (8, 16), (6, 8)), 28800.0)]
    idx = np.array([[2, 1]] * 3)  # 4 / 6 everywhere, unpruned
    while meter.value((1.0,), space.bits(idx[:, 0], idx[:, 1])) < goal * 0.99:
        idx = _bit_step(space, meter, (1.0,), idx, down=False)  # type: ignore[arg-type]
    assert space.bits(idx[:, 0], idx[:, 1]) == ((8, 8), (8, 6), (4, 6))
    assert meter.value((1.0,), space.bits(idx[:, 0], idx[:, 1])) == 32800.0
