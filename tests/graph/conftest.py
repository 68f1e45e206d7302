"""Fixtures of the graph tests: zoo models exported once per session, renamed copies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest

from models.export import export_onnx
from models.resnet_cifar import resnet_cifar
from models.zoo import zoo_entries
from onnxprune.load import Model, normalize

IMAGE = (1, 3, 32, 32)


def _build(name: str, exporter: str) -> onnx.ModelProto:
    if name.startswith("resnet") and name[6:].isdigit():
        return export_onnx(resnet_cifar(int(name[6:]), seed=0), IMAGE, exporter=exporter)
    entry = next(e for e in zoo_entries() if e.name == name)
    return export_onnx(entry.build(0), entry.input_shape, exporter=exporter)


@pytest.fixture(scope="session")
def zoo_model() -> Callable[[str, str], Model]:
    """``(name, exporter) -> normalized Model`` (``resnet<depth>`` or a zoo name), cached."""
    cache: dict[tuple[str, str], Model] = {}

    def get(name: str, exporter: str = "torchscript") -> Model:
        if (name, exporter) not in cache:
            cache[(name, exporter)] = normalize(_build(name, exporter), name=name)
        return cache[(name, exporter)]

    return get


def _random_topological_order(graph: onnx.GraphProto, rng: np.random.Generator) -> list[onnx.NodeProto]:
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    deps = [{producer[t] for t in n.input if t in producer} for n in nodes]
    users: list[list[int]] = [[] for _ in nodes]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    waiting = [len(d) for d in deps]
    ready = [i for i, w in enumerate(waiting) if w == 0]
    order = []
    while ready:
        i = ready.pop(int(rng.integers(len(ready))))
        order.append(nodes[i])
        for j in users[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                ready.append(j)
    return order


def _renamed(proto: onnx.ModelProto, rng: np.random.Generator) -> onnx.ModelProto:
    """Copy of ``proto`` with every name random and the nodes in a random topological order."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    names = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
    for node in graph.node:
        names.update(n for n in (*node.input, *node.output) if n)
    ordered = sorted(names)
    fresh = [f"t{v:08x}" for v in rng.choice(16**8, size=len(ordered), replace=False)]
    new = dict(zip(ordered, fresh))
    for seq in (graph.initializer, graph.input, graph.output, graph.value_info):
        for item in seq:
            item.name = new.get(item.name, item.name)
    for node in graph.node:
        node.name = f"n{rng.integers(1 << 40):010x}"
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name:
                    field[i] = new[name]
    order = [onnx.NodeProto.FromString(n.SerializeToString()) for n in _random_topological_order(graph, rng)]
    del graph.node[:]
    graph.node.extend(order)
    onnx.checker.check_model(out)
    return out


@pytest.fixture(scope="session")
def renamed() -> Callable[[onnx.ModelProto, np.random.Generator], onnx.ModelProto]:
    """``(proto, rng) -> copy`` with random names and a random valid node order."""
    return _renamed
