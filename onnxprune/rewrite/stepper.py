"""Run a model segment by segment on calibration data, holding only the tensors still needed.

Used by reconstruction: a layer's weights can be replaced between two segments, and the next
segment sees the new weights, so each layer is fitted on inputs that already include every
earlier fix (errors do not accumulate) while the whole model is executed only once.
Held tensors are kept as per-batch chunks (``values[name][k]`` holds samples
``[k * batch_size, (k + 1) * batch_size)``), so nothing is ever concatenated or copied.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from onnxprune.rewrite.capture import Progress, make_session, tensor_types

logger = logging.getLogger(__name__)


class SegmentError(RuntimeError):
    """The model cannot be stepped (a held tensor is not batch-first)."""


class Stepper:
    """Executes ``model``'s nodes in order, up to a chosen node, on calibration feeds.

    ``weights`` (initializer name -> array) may be changed between calls of :meth:`advance_to`;
    later segments use the changed values.
    """

    def __init__(self, model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], *, batch_size: int,
                 threads: int) -> None:
        """Prepare the stepper.

        Args:
            model: A topologically sorted model (not modified).
            feeds: Graph input name -> calibration array (samples on axis 0).
            batch_size: Samples per ONNX Runtime run.
            threads: ONNX Runtime threads.
        """
        self.model = model
        self.nodes = [onnx.NodeProto() for _ in model.graph.node]
        for copy, node in zip(self.nodes, model.graph.node):
            copy.CopyFrom(node)
        self.weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        self.types = tensor_types(model)
        self.count = len(next(iter(feeds.values())))
        self.values: dict[str, list[np.ndarray]] = {
            name: [value[start:start + batch_size] for start in range(0, self.count, batch_size)]
            for name, value in feeds.items()}
        self.batch_size, self.threads = batch_size, threads
        self.chunks = -(-self.count // batch_size)
        self.pos = 0
        self.last_use: dict[str, int] = {}
        for index, node in enumerate(self.nodes):
            for name in node.input:
                self.last_use[name] = index

    def index_of(self, node_name: str) -> int:
        """Position of a node in execution order."""
        for index, node in enumerate(self.nodes):
            if node.name == node_name:
                return index
        raise KeyError(node_name)

    def advance_to(self, stop: int, on_batch: Progress | None = None) -> None:
        """Execute nodes ``[pos, stop)``; afterwards every input of node ``stop`` is in :attr:`values`."""
        if stop <= self.pos:
            return
        segment = self.nodes[self.pos:stop]
        produced = {o for n in segment for o in n.output if o}
        inputs: list[str] = []
        for node in segment:
            for name in node.input:
                if name and name not in produced and name not in self.weights and name not in inputs:
                    inputs.append(name)
        outputs = [o for n in segment for o in n.output if o and self.last_use.get(o, -1) >= stop]
        if outputs:
            self._run(segment, inputs, outputs, on_batch)
        self.pos = stop
        for name in [n for n in self.values if self.last_use.get(n, -1) < stop]:
            del self.values[name]

    def _run(self, segment: list[onnx.NodeProto], inputs: list[str], outputs: list[str],
             on_batch: Progress | None) -> None:
        used = {name for n in segment for name in n.input if name in self.weights}
        graph = helper.make_graph(
            segment, "segment",
            [helper.make_tensor_value_info(n, self.types.get(n, onnx.TensorProto.FLOAT), None) for n in inputs],
            [helper.make_tensor_value_info(n, self.types.get(n, onnx.TensorProto.FLOAT), None) for n in outputs],
            [numpy_helper.from_array(np.asarray(self.weights[n]), n) for n in sorted(used)])
        seg_model = helper.make_model(graph, opset_imports=self.model.opset_import)
        seg_model.ir_version = self.model.ir_version
        session = make_session(seg_model, self.threads)
        chunks: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
        for k in range(self.chunks):
            values = session.run(outputs, {n: self.values[n][k] for n in inputs})
            batch = min(self.batch_size, self.count - k * self.batch_size)
            for name, value in zip(outputs, values):
                if value.ndim == 0 or value.shape[0] != batch:
                    raise SegmentError(f"tensor '{name}' is not batch-first (shape {value.shape})")
                chunks[name].append(value)
            if on_batch is not None:
                on_batch(batch)
        self.values.update(chunks)
