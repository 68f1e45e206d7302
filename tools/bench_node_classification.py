"""Benchmark (AGMC section 4.1): semi-supervised node classification of the ResNet-56 graph by stage.

Every feature map of the flat ResNet-56 graph (TorchScript export, random weights) is labelled
with its stage: the index of its spatial resolution (32, 16, 8; the pooled head counts as the
last stage). 20 % of the nodes of each stage are labelled (stratified, per seed); AGMC's GCN
encoder (3 layers, the last one giving the class logits) is trained on them with Adam and
scored on the other 80 %. Feature settings:

* ``full``: the graph's node features (:data:`onnxprune.graph.NODE_FEATURES`);
* ``no-spatial``: the same without height and width;
* ``topology``: only the producer op type, kernel, stride and depthwise / grouped flags;
* ``random``: i.i.d. Gaussian features (as in the GNN-RL code), so only the graph structure
  can carry the label.

    .venv/bin/python tools/bench_node_classification.py --json build/bench_node_classification.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.export import export_onnx  # noqa: E402
from models.resnet_cifar import resnet_cifar  # noqa: E402
from onnxprune.embed import GCNEncoder, flat_data, make_generator  # noqa: E402
from onnxprune.graph import NODE_FEATURES, OP_FEATURES, CompGraph, build_graph  # noqa: E402
from onnxprune.io import write_json_atomic  # noqa: E402
from onnxprune.load import normalize  # noqa: E402

TARGET = 0.90


def stage_labels(cg: CompGraph) -> np.ndarray:
    """Stage of every feature map: index of its spatial size (largest first); 1x1 / flat maps -> last."""
    heights = [int(s[2] or 0) if len(s) == 4 else 0 for s in cg.shapes]
    sizes = sorted({h for h in heights if h > 1}, reverse=True)
    return np.asarray([sizes.index(h) if h in sizes else len(sizes) - 1 for h in heights], dtype=np.int64)


def train_mask(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Stratified mask of ``fraction`` of the nodes of every class."""
    mask = np.zeros(labels.size, dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        mask[rng.choice(idx, max(1, round(fraction * idx.size)), replace=False)] = True
    return mask


def run(x: torch.Tensor, edge_index: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, seed: int,
        epochs: int, layers: int) -> float:
    """Train a GCN on the masked nodes and return accuracy on the others."""
    model = GCNEncoder(x.size(1), 64, int(labels.max()) + 1, layers=layers, generator=make_generator(seed))
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, edge_index).nodes[mask], labels[mask])
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model(x, edge_index).nodes.argmax(dim=1)
    return float((pred[~mask] == labels[~mask]).float().mean())


def feature_sets(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The four feature settings of the module docstring."""
    no_spatial = x.clone()
    no_spatial[:, [NODE_FEATURES.index("height"), NODE_FEATURES.index("width")]] = 0.0
    rand = torch.randn(x.size(0), 32, generator=torch.Generator().manual_seed(seed))
    return {"full": x, "no-spatial": no_spatial, "topology": x[:, : len(OP_FEATURES)].clone(), "random": rand}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--fraction", type=float, default=0.2, help="labelled fraction per stage")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--json", type=Path, default=ROOT / "build" / "bench_node_classification.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    console = Console(width=120)
    cg = build_graph(normalize(export_onnx(resnet_cifar(args.depth, seed=0), (1, 3, 32, 32))))
    data = flat_data(cg)
    labels = torch.from_numpy(stage_labels(cg))
    results: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        mask = torch.from_numpy(train_mask(labels.numpy(), args.fraction, np.random.default_rng(seed)))
        for name, x in feature_sets(data.x, seed).items():
            results.setdefault(name, []).append(run(x, data.edge_index, labels, mask, seed, args.epochs, args.layers))
    table = Table(title=f"ResNet-{args.depth}: {cg.num_nodes} nodes, {int(labels.max()) + 1} stages, "
                        f"{args.fraction:.0%} labelled, GCN x{args.layers}, {args.seeds} seeds")
    for col in ("features", "mean acc", "std", "min", f">= {TARGET:.0%}"):
        table.add_column(col, justify="right")
    for name, accs in results.items():
        table.add_row(name, f"{statistics.mean(accs):.3f}", f"{statistics.pstdev(accs):.3f}", f"{min(accs):.3f}",
                      "yes" if statistics.mean(accs) >= TARGET else "no")
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.json, {"depth": args.depth, "nodes": cg.num_nodes, "fraction": args.fraction,
                                  "layers": args.layers, "epochs": args.epochs,
                                  "class_sizes": torch.bincount(labels).tolist(), "accuracy": results})
    console.print(f"wrote {args.json}")
    return 0 if statistics.mean(results["full"]) >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
