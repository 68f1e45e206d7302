"""ONNX graph -> trainable torch module, and the trained values written back into the same graph.

Contract:
    requires: a checked model of default-domain opset >= 13 whose nodes are all in
    :data:`onnxprune.finetune.ops.OPS` (or ``Constant``), without subgraphs.
    guarantees: :class:`GraphModule` runs the graph node by node in file order with one torch
    function per op; every float initializer that feeds only trainable inputs
    (:data:`~onnxprune.finetune.ops.TRAINABLE_INPUTS`) is an ``nn.Parameter`` addressed by its
    initializer name, every other initializer a fixed buffer. BatchNormalization runs in eval mode
    (its running mean/var are fixed, scale and bias train). :func:`write_back` returns a copy of
    the model in which only those initializers' values changed (same names, shapes, dtypes, order,
    nodes; an NHWC graph stays NHWC).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor, nn

from onnxprune.errors import UnsupportedInput
from onnxprune.finetune.opnode import OpNode
from onnxprune.finetune.ops import OPS, TRAINABLE_INPUTS

logger = logging.getLogger(__name__)

#: Per-node input transform (QAT fake-quant): (node, inputs) -> inputs.
InputHook = Callable[[OpNode, list["Tensor | None"]], list["Tensor | None"]]
#: Per-node output transform (re-inserted normalization while training): (node, outputs) -> outputs.
OutputHook = Callable[[OpNode, tuple["Tensor | None", ...]], tuple["Tensor | None", ...]]


def default_opset(model: onnx.ModelProto) -> int:
    """The model's default-domain opset (0 when it imports none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def check_supported(model: onnx.ModelProto) -> None:
    """Raise UnsupportedInput naming the first op (or opset) the interpreter cannot train."""
    opset = default_opset(model)
    if opset < 13:
        raise UnsupportedInput(f"the model has opset {opset}; fine-tuning needs opset 13 or newer: "
                               "run it through `onnxprune prune` (which upgrades it) first")
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or (node.op_type not in OPS and node.op_type != "Constant"):
            raise UnsupportedInput(f"node '{node.name}' is {node.domain + '.' if node.domain else ''}"
                                   f"{node.op_type}, which fine-tuning cannot run; supported: the ops "
                                   "`onnxprune analyze` has rules for")
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise UnsupportedInput(f"node '{node.name}' ({node.op_type}) has a subgraph; fine-tuning "
                                   "cannot run control flow")


def trainable_names(model: onnx.ModelProto) -> tuple[str, ...]:
    """Float initializers used only at trainable input positions, in initializer order."""
    uses: dict[str, bool] = {}
    for node in model.graph.node:
        positions = TRAINABLE_INPUTS.get(node.op_type, frozenset())
        for index, name in enumerate(node.input):
            uses[name] = uses.get(name, True) and index in positions
    outputs = {o.name for o in model.graph.output}
    return tuple(init.name for init in model.graph.initializer
                 if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE)
                 and uses.get(init.name, False) and init.name not in outputs)


class GraphModule(nn.Module):
    """The ONNX graph as a torch module (see the module contract).

    Args:
        model: The model (not modified; its initializers are copied into torch tensors).
        input_hooks: Optional node name -> input transform, applied before the node's op
            (quantization-aware training puts fake-quant here).
        output_hooks: Optional node name -> output transform, applied after the node's op
            (training-time normalization of folded convolutions goes here).
    """

    def __init__(self, model: onnx.ModelProto, input_hooks: Mapping[str, InputHook] | None = None,
                 output_hooks: Mapping[str, OutputHook] | None = None) -> None:
        super().__init__()
        check_supported(model)
        graph = model.graph
        opset = default_opset(model)
        trainable = set(trainable_names(model))
        self.param_names: tuple[str, ...] = tuple(n for n in (i.name for i in graph.initializer) if n in trainable)
        self.params = nn.ParameterList(
            [nn.Parameter(torch.from_numpy(numpy_helper.to_array(init).copy()))
             for init in graph.initializer if init.name in trainable])
        self._slots: dict[str, tuple[str, int]] = {n: ("p", i) for i, n in enumerate(self.param_names)}
        constants = [(init.name, numpy_helper.to_array(init)) for init in graph.initializer if init.name not in trainable]
        self.nodes: tuple[tuple[OpNode, tuple[str, ...], tuple[str, ...]], ...] = ()
        nodes = []
        for index, node in enumerate(graph.node):
            parsed = OpNode.from_proto(node, opset, index)
            if node.op_type == "Constant":
                constants.append((node.output[0], _constant_value(parsed)))
                continue
            nodes.append((parsed, tuple(node.input), tuple(node.output)))
        self.nodes = tuple(nodes)
        for index, (name, array) in enumerate(constants):
            self.register_buffer(f"const_{index}", torch.from_numpy(np.array(array)), persistent=False)
            self._slots[name] = ("b", index)
        initializer_names = {i.name for i in graph.initializer}
        self.input_names = tuple(i.name for i in graph.input if i.name not in initializer_names)
        self.output_names = tuple(o.name for o in graph.output)
        self.input_hooks: Mapping[str, InputHook] = dict(input_hooks or {})
        self.output_hooks: Mapping[str, OutputHook] = dict(output_hooks or {})

    def parameter(self, name: str) -> nn.Parameter:
        """The parameter of the initializer ``name``."""
        return self.params[self.param_names.index(name)]

    def named_initializers(self) -> dict[str, Tensor]:
        """Initializer name -> its current trainable tensor."""
        return dict(zip(self.param_names, self.params))

    def _value(self, name: str) -> Tensor:
        kind, index = self._slots[name]
        return self.params[index] if kind == "p" else getattr(self, f"const_{index}")

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        """Run the graph on the model inputs (in graph order); returns every graph output."""
        env: dict[str, Tensor | None] = {name: self._value(name) for name in self._slots}
        env.update(zip(self.input_names, inputs))
        for node, in_names, out_names in self.nodes:
            args: list[Tensor | None] = [env[n] if n else None for n in in_names]
            hook = self.input_hooks.get(node.name)
            if hook is not None:
                args = hook(node, args)
            results = OPS[node.op_type](node, args)
            post = self.output_hooks.get(node.name)
            if post is not None:
                results = post(node, tuple(results))
            for out, value in zip(out_names, results):
                if out:
                    env[out] = value
        return tuple(env[o] for o in self.output_names)


def _constant_value(node: OpNode) -> np.ndarray:
    for key, dtype in (("value", None), ("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype=dtype)
    raise UnsupportedInput(f"node '{node.name}': Constant without a numeric value cannot be fine-tuned")


def write_back(model: onnx.ModelProto, values: Mapping[str, np.ndarray | Tensor]) -> onnx.ModelProto:
    """A copy of ``model`` with the named initializers' values replaced (nothing else changes).

    Args:
        model: The model the values came from.
        values: Initializer name -> new value of the same shape.

    Raises:
        ValueError: a name that is no initializer or a value of another shape (a programming error).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    remaining = dict(values)
    for init in out.graph.initializer:
        if init.name not in remaining:
            continue
        value = remaining.pop(init.name)
        array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        if tuple(array.shape) != tuple(init.dims):
            raise ValueError(f"initializer {init.name}: shape {array.shape} != {tuple(init.dims)}")
        init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array.astype(dtype)), init.name))
    if remaining:
        raise ValueError(f"no initializers named {sorted(remaining)[:3]}")
    return out


def module_values(module: GraphModule) -> dict[str, Tensor]:
    """The module's trainable initializer values (detached), for :func:`write_back`."""
    return {name: p.detach() for name, p in module.named_initializers().items()}


def run_module(module: GraphModule, batch: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run ``module`` on numpy inputs without gradients; returns numpy outputs."""
    with torch.no_grad():
        return [t.numpy() for t in module(*(torch.from_numpy(np.asarray(a)) for a in batch))]
