"""Benchmark: flat vs hierarchical graph sizes, and the cost of embedding a >= 30,000-node graph (issue 5).

Part 1 exports ResNet-20/56/1202 (TorchScript, random weights: the topology is what matters),
a full-width MobileNetV2 (torchvision's stage plan, CIFAR input) and the zoo's small
MobileNetV2, and reports the flat graph, the level-1 and level-2 graphs and their distinct
motifs. "Hierarchical size" counts what the m-GNN embeds: the top graph plus every distinct
motif graph once.

Part 2 builds a synthetic deep residual ONNX model whose flat graph has >= 30,000 feature
maps and times (median of 5 after a warm-up, ``--threads`` torch threads, default 1 because
the benchmark machine's 2 cores are shared) building the encoder inputs and one forward pass
of each encoder. The peak resident memory during embedding is read from ``VmHWM`` after
resetting it (``/proc/self/clear_refs``), i.e. it is the whole process's RSS peak while
embedding (Python, torch and the graph included).

    .venv/bin/python tools/bench_graph.py                     # everything (ResNet-1202 export ~1-2 min)
    .venv/bin/python tools/bench_graph.py --skip-1202 --json build/bench_graph.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.export import export_onnx  # noqa: E402
from models.nets import InvertedResidual, conv_bn  # noqa: E402
from models.resnet_cifar import resnet_cifar  # noqa: E402
from models.zoo import zoo_entries  # noqa: E402
from onnxprune.embed import (MGNN, DiffPoolEncoder, GCNEncoder, flat_data, hier_inputs,  # noqa: E402
                             make_generator)
from onnxprune.graph import CompGraph, Hierarchy, build_graph, build_hierarchy  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402
from onnxprune.load import normalize  # noqa: E402

IMAGE = (1, 3, 32, 32)
# torchvision MobileNetV2: (expansion t, channels c, repeats n, first stride s)
MOBILENETV2_PLAN = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1))


class MobileNetV2Full(torch.nn.Module):
    """Full-width MobileNetV2 (17 inverted residuals, 1280-wide head), for graph sizes only."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        blocks, cin = [], 32
        for t, c, n, s in MOBILENETV2_PLAN:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.stem = conv_bn(3, 32, 3, 2, act=torch.nn.ReLU6)
        self.blocks = torch.nn.Sequential(*blocks)
        self.head = conv_bn(cin, 1280, 1, act=torch.nn.ReLU6)
        self.fc = torch.nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        return self.fc(self.head(self.blocks(self.stem(x))).mean(dim=(2, 3)))


def synthetic_resnet(blocks: int, channels: int = 8, hw: int = 8, seed: int = 0) -> onnx.ModelProto:
    """A residual chain of ``blocks`` Conv-BN-ReLU-Conv-BN-Add-ReLU blocks (7 feature maps each)."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    nodes.append(helper.make_node("Conv", ["input", const("stem_w", rng.normal(0, 0.1, (channels, 3, 3, 3)))],
                                  ["stem"], name="stem", **conv))
    x = "stem"
    bn = [const(f"bn_{k}", np.full(channels, v)) for k, v in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))]
    for b in range(blocks):
        p = f"b{b}_"
        w1 = const(p + "w1", rng.normal(0, 0.05, (channels, channels, 3, 3)))
        w2 = const(p + "w2", rng.normal(0, 0.05, (channels, channels, 3, 3)))
        nodes += [helper.make_node("Conv", [x, w1], [p + "c1"], name=p + "conv1", **conv),
                  helper.make_node("BatchNormalization", [p + "c1", *bn], [p + "n1"], name=p + "bn1"),
                  helper.make_node("Relu", [p + "n1"], [p + "r1"], name=p + "relu1"),
                  helper.make_node("Conv", [p + "r1", w2], [p + "c2"], name=p + "conv2", **conv),
                  helper.make_node("BatchNormalization", [p + "c2", *bn], [p + "n2"], name=p + "bn2"),
                  helper.make_node("Add", [p + "n2", x], [p + "a"], name=p + "add"),
                  helper.make_node("Relu", [p + "a"], [p + "out"], name=p + "relu2")]
        x = p + "out"
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("MatMul", ["flat", const("fc_w", rng.normal(0, 0.1, (channels, 10)))], ["output"],
                               name="fc")]
    graph = helper.make_graph(nodes, "synthetic", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                 [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _sizes(name: str, cg: CompGraph, hier: Hierarchy) -> dict[str, object]:
    row: dict[str, object] = {"model": name, "flat_nodes": cg.num_nodes, "flat_edges": cg.num_edges}
    motif_total = 0
    for lvl in hier.levels:
        size = sum(m.graph.number_of_nodes() + m.graph.number_of_edges() for m in lvl.motifs)
        motif_total += size
        row[f"l{lvl.level}_nodes"] = lvl.graph.number_of_nodes()
        row[f"l{lvl.level}_edges"] = lvl.graph.number_of_edges()
        row[f"l{lvl.level}_motifs"] = len(lvl.motifs)
        row[f"l{lvl.level}_counts"] = list(lvl.counts())
    row["hier_size"] = hier.top.graph.number_of_nodes() + hier.top.graph.number_of_edges() + motif_total
    row["flat_size"] = cg.num_nodes + cg.num_edges
    return row


def part_sizes(skip_1202: bool, console: Console) -> list[dict[str, object]]:
    """Graph sizes of the CIFAR ResNets and MobileNetV2s."""
    cases: list[tuple[str, Callable[[], torch.nn.Module], tuple[int, ...]]] = [
        (f"resnet{d}", lambda d=d: resnet_cifar(d, seed=0), IMAGE) for d in (20, 56, *(() if skip_1202 else (1202,)))]
    cases.append(("mobilenetv2 (full)", lambda: MobileNetV2Full().eval(), IMAGE))
    zoo = next(e for e in zoo_entries() if e.name == "mobilenetv2")
    cases.append(("mobilenetv2 (zoo)", lambda: zoo.build(0), zoo.input_shape))
    rows = []
    for name, build, shape in cases:
        with console.status(f"exporting {name}"):
            model = normalize(export_onnx(build(), shape), name=name)
        t0 = time.perf_counter()
        cg = build_graph(model)
        t1 = time.perf_counter()
        hier = build_hierarchy(cg)
        t2 = time.perf_counter()
        rows.append({**_sizes(name, cg, hier), "graph_s": t1 - t0, "hierarchy_s": t2 - t1})
    return rows


def _peak_reset() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Callable[[], object], repeats: int = 5) -> dict[str, float]:
    """Median seconds of ``fn`` after one warm-up call, RSS before and peak RSS while running (MB)."""
    fn()
    _peak_reset()
    before = _status_mb("VmRSS")
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"seconds": statistics.median(times), "rss_before_mb": before, "peak_rss_mb": _status_mb("VmHWM")}


def part_large(blocks: int, console: Console) -> dict[str, object]:
    """Time and memory of embedding the synthetic graph with every encoder."""
    with console.status(f"building a {blocks}-block synthetic model"):
        t0 = time.perf_counter()
        model = normalize(synthetic_resnet(blocks), name="synthetic")
        t1 = time.perf_counter()
        cg = build_graph(model)
        t2 = time.perf_counter()
        hier = build_hierarchy(cg)
        t3 = time.perf_counter()
    data = flat_data(cg)
    gcn = GCNEncoder(data.num_features, generator=make_generator(0)).eval()
    pool = DiffPoolEncoder(data.num_features, generator=make_generator(0)).eval()
    mgnn = MGNN(generator=make_generator(0)).eval()
    out: dict[str, object] = {"flat_nodes": cg.num_nodes, "flat_edges": cg.num_edges, "normalize_s": t1 - t0,
                              "graph_s": t2 - t1, "hierarchy_s": t3 - t2, "top_nodes": hier.top.graph.number_of_nodes()}
    runs = {"gcn_meanpool": lambda: gcn(*_flat(cg)).graph,
            "gcn_diffpool": lambda: pool(*_flat(cg)).graph,
            "mgnn": lambda: mgnn(hier_inputs(cg, hier)).graph,
            "flat_data_only": lambda: flat_data(cg)}
    with torch.no_grad():
        for name, fn in runs.items():
            out[name] = _timed(fn)
    return out


def _flat(cg: CompGraph) -> tuple[torch.Tensor, torch.Tensor]:
    data = flat_data(cg)
    return data.x, data.edge_index


def _print(console: Console, sizes: list[dict[str, object]], large: dict[str, object]) -> None:
    table = Table(title="Flat vs hierarchical graphs (TorchScript export, BN kept)")
    for col in ("model", "flat N/E", "L1 N/E", "L1 motifs", "L2 N/E", "L2 motifs (counts)", "flat size",
                "hier. size", "build s"):
        table.add_column(col, justify="right")
    for r in sizes:
        table.add_row(str(r["model"]), f"{r['flat_nodes']}/{r['flat_edges']}", f"{r['l1_nodes']}/{r['l1_edges']}",
                      str(r["l1_motifs"]), f"{r['l2_nodes']}/{r['l2_edges']}",
                      f"{r['l2_motifs']} {tuple(r['l2_counts'])}", str(r["flat_size"]), str(r["hier_size"]),
                      f"{r['graph_s'] + r['hierarchy_s']:.2f}")
    console.print(table)
    big = Table(title=f"Embedding a flat graph of {large['flat_nodes']} nodes / {large['flat_edges']} edges "
                      "(median of 5, forward + input building)")
    big.add_column("encoder")
    big.add_column("seconds", justify="right")
    big.add_column("RSS before MB", justify="right")
    big.add_column("peak RSS MB", justify="right")
    for name in ("gcn_meanpool", "gcn_diffpool", "mgnn", "flat_data_only"):
        r = large[name]
        big.add_row(name, f"{r['seconds']:.3f}", f"{r['rss_before_mb']:.0f}", f"{r['peak_rss_mb']:.0f}")
    console.print(big)
    console.print(f"one-off: normalize {large['normalize_s']:.1f} s, build graph {large['graph_s']:.1f} s, "
                  f"hierarchy {large['hierarchy_s']:.1f} s ({large['top_nodes']} top-level nodes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=4300, help="synthetic residual blocks (7 nodes each)")
    parser.add_argument("--skip-1202", action="store_true", help="leave out ResNet-1202 (slow to export)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_graph.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    console = Console(width=140)
    sizes = part_sizes(args.skip_1202, console)
    large = part_large(args.blocks, console)
    _print(console, sizes, large)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"sizes": sizes, "large": large, "torch_threads": torch.get_num_threads()})
    console.print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
