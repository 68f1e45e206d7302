"""Op vocabulary, op classes and per-op static facts (kernel, stride, channels, MACs, params).

Everything here depends only on op types, attributes and shapes, never on node or tensor
names, so that motif detection is name-independent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import helper

logger = logging.getLogger(__name__)

Shape = tuple[int | None, ...]

#: Fixed op vocabulary of the one-hot features. ``Input`` marks graph inputs, ``Other`` any op
#: not listed. Its order is part of the feature layout: append only.
OP_VOCAB: tuple[str, ...] = (
    "Input", "Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization",
    "LayerNormalization", "InstanceNormalization", "Relu", "Clip", "LeakyRelu", "PRelu",
    "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Softmax", "Add", "Sub", "Mul",
    "Div", "Concat", "Split", "Slice", "Pad", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "ReduceMean", "Reshape", "Flatten", "Transpose", "Resize", "Gather",
    "Squeeze", "Unsqueeze", "Identity", "Dropout", "QuantizeLinear", "DequantizeLinear", "Other",
)
OP_INDEX: Mapping[str, int] = {name: i for i, name in enumerate(OP_VOCAB)}

#: Ops that carry a weight (a constant operand) and create output channels.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "ConvInteger",
                          "MatMulInteger", "QLinearConv", "QLinearMatMul"})
#: Element-wise nonlinearities.
NONLINEAR_OPS = frozenset({"Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid",
                           "HardSwish", "Tanh", "Elu", "Selu", "Celu", "Gelu", "Softplus",
                           "Softsign", "Mish", "Erf", "ThresholdedRelu", "Abs"})
#: Per-element affine or transparent ops (with at most one feature-map operand).
AFFINE_OPS = frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization",
                        "GroupNormalization", "Identity", "Dropout", "Cast", "QuantizeLinear",
                        "DequantizeLinear", "Add", "Sub", "Mul", "Div", "Neg", "Pow", "Sqrt"})
#: Multi-operand ops whose operand order does not matter.
COMMUTATIVE_OPS = frozenset({"Add", "Mul", "Sum", "Max", "Min", "Mean"})
#: Element-wise ops allowed inside a compound activation (e.g. x * sigmoid(x)).
ELEMENTWISE_OPS = NONLINEAR_OPS | AFFINE_OPS | COMMUTATIVE_OPS
_POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool"})
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})

WEIGHTED, FOLLOWER, STRUCTURAL = "weighted", "follower", "structural"


@dataclass(frozen=True)
class OpInfo:
    """Static facts about one ONNX node, as an operation of the computational graph.

    Attributes:
        name: Unique op key (the ONNX node name, or ``<op_type>#<index>`` when empty/duplicated).
        op_type: ONNX op type.
        kind: ``weighted`` (creates channels), ``follower`` (element-wise, one feature-map
            operand; fused into the preceding compound op) or ``structural`` (anything else).
        signature: Name-free description used for motif hashing, e.g. ``Conv/k3x3/s2/dw``.
        inputs: Feature-map operands in input-slot order (constants left out).
        outputs: Feature-map results.
        kernel: Spatial kernel size (``()`` if none).
        stride: Spatial stride (``()`` if none).
        groups: Conv ``group`` attribute (1 otherwise).
        depthwise: Grouped conv with one input channel per group.
        c_in: Input channels (0 if unknown).
        c_out: Output channels (0 if unknown).
        macs: Multiply-accumulates at batch 1 (weighted ops only; 0 otherwise).
        params: Floating-point constants consumed (weights, biases, BN statistics).
    """

    name: str
    op_type: str
    kind: str
    signature: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    depthwise: bool
    c_in: int
    c_out: int
    macs: int
    params: int

    @property
    def nonlinear(self) -> bool:
        """True for element-wise nonlinearities."""
        return self.op_type in NONLINEAR_OPS


def channel_axis(shape: Shape) -> int | None:
    """Channel axis of a feature map: 1 for NC, NCL... layouts; ``None`` for scalars/vectors."""
    return 1 if len(shape) >= 2 else None


def channels_of(shape: Shape | None) -> int:
    """Channel count of a feature map (0 if unknown)."""
    if not shape:
        return 0
    axis = channel_axis(shape)
    return int(shape[axis] or 0) if axis is not None else 0


def spatial_of(shape: Shape | None) -> tuple[int, int]:
    """``(h, w)`` of an NCHW-like feature map (missing dims count as 1, unknown as 0)."""
    if not shape or len(shape) < 3:
        return (1, 1)
    dims = [int(d or 0) for d in shape[2:]]
    if len(dims) == 1:
        return (dims[0], 1)
    return (dims[0], math.prod(dims[1:]))


def _numel(shape: Shape | None) -> int:
    if not shape or any(d is None for d in shape):
        return 0
    return math.prod(int(d) for d in shape)


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _kernel_stride(node: onnx.NodeProto, attrs: Mapping[str, object],
                   weight_shape: Shape | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
        kernel = attrs.get("kernel_shape")
        if kernel is None and weight_shape and len(weight_shape) > 2:
            kernel = tuple(int(d or 0) for d in weight_shape[2:])
        kernel = tuple(int(k) for k in (kernel or ()))
    elif node.op_type in _POOL_OPS:
        kernel = tuple(int(k) for k in attrs.get("kernel_shape", ()))  # type: ignore[union-attr]
    else:
        return (), ()
    strides = tuple(int(s) for s in attrs.get("strides", ()))  # type: ignore[union-attr]
    return kernel, strides or tuple(1 for _ in kernel)


def _signature(op_type: str, kernel: tuple[int, ...], stride: tuple[int, ...], depthwise: bool,
               grouped: bool) -> str:
    parts = [op_type]
    if kernel:
        parts.append("k" + "x".join(str(k) for k in kernel))
        parts.append("s" + "x".join(str(s) for s in stride))
    if depthwise:
        parts.append("dw")
    elif grouped:
        parts.append("g")
    return "/".join(parts)


def _macs(op_type: str, in_shape: Shape | None, out_shape: Shape | None, c_in: int, c_out: int,
          groups: int, kernel: tuple[int, ...]) -> int:
    ksize = math.prod(kernel) if kernel else 1
    out_n, in_n = _numel(out_shape), _numel(in_shape)
    if op_type in ("Conv", "ConvInteger", "QLinearConv"):
        return out_n * (c_in // max(groups, 1)) * ksize
    if op_type == "ConvTranspose":
        return in_n * (c_out // max(groups, 1)) * ksize
    if op_type in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        k = int(in_shape[-1] or 0) if in_shape else 0
        return out_n * k
    return 0


def op_info(node: onnx.NodeProto, key: str, fm_inputs: Sequence[tuple[int, str]],
            fm_outputs: Sequence[str], shapes: Mapping[str, Shape], dtypes: Mapping[str, int],
            constants: frozenset[str]) -> OpInfo:
    """Describe ``node`` as an operation between feature maps.

    Args:
        node: The ONNX node.
        key: Its unique op key.
        fm_inputs: ``(slot, tensor)`` of its feature-map operands.
        fm_outputs: Its feature-map results.
        shapes: Tensor shapes (batch 1).
        dtypes: Tensor element types.
        constants: Names of constant tensors (initializers and folded values).

    Returns:
        The op's :class:`OpInfo`.
    """
    attrs = _attrs(node)
    const_inputs = [t for t in node.input if t and t in constants]
    weight_shape = shapes.get(const_inputs[0]) if const_inputs else None
    in_shape = shapes.get(fm_inputs[0][1]) if fm_inputs else None
    out_shape = shapes.get(fm_outputs[0]) if fm_outputs else None
    weighted = node.op_type in WEIGHTED_OPS and len(fm_inputs) == 1
    if weighted:
        kind = WEIGHTED
    elif len(fm_inputs) == 1 and (node.op_type in NONLINEAR_OPS or node.op_type in AFFINE_OPS):
        kind = FOLLOWER
    else:
        kind = STRUCTURAL
    kernel, stride = _kernel_stride(node, attrs, weight_shape)
    groups = int(attrs.get("group", 1))  # type: ignore[arg-type]
    c_in, c_out = channels_of(in_shape), channels_of(out_shape)
    if node.op_type in ("Gemm", "MatMul") and in_shape and out_shape:
        c_in, c_out = int(in_shape[-1] or 0), int(out_shape[-1] or 0)
    depthwise = groups > 1 and groups == c_in
    signature = _signature(node.op_type, kernel, stride, depthwise, groups > 1)
    params = sum(_numel(shapes.get(t)) for t in set(const_inputs) if dtypes.get(t) in _FLOAT_TYPES)
    macs = _macs(node.op_type, in_shape, out_shape, c_in, c_out, groups, kernel) if weighted else 0
    return OpInfo(name=key, op_type=node.op_type, kind=kind, signature=signature,
                  inputs=tuple(t for _, t in fm_inputs), outputs=tuple(fm_outputs), kernel=kernel,
                  stride=stride, groups=groups, depthwise=depthwise, c_in=c_in, c_out=c_out,
                  macs=int(macs), params=int(params))
