"""What each deployment target documents as supported: the one table the target checks read.

Sources (read, not copied; op names are facts):
- TensorRT: the ONNX-TensorRT operator support matrix for TensorRT 10.0,
  https://github.com/onnx/onnx-tensorrt/blob/main/docs/operators.md (opsets 9-20; DequantizeLinear
  supports INT8/FP8/INT4 with zero ``x_zero_point``; QuantizeLinear needs zero ``y_zero_point``;
  INT4/INT8/FP8 are quantized types, usable only through Q/DQ from a wider float type).
- ONNX Runtime int4 QuantizeLinear/DequantizeLinear (opset 21): CPU EP since ORT 1.19
  (microsoft/onnxruntime PR 20362), CUDA EP since ORT 1.20 (PR 21846), see
  https://github.com/microsoft/onnxruntime/blob/main/docs/OperatorKernels.md
- Tensor-core friendly widths: NVIDIA Deep Learning Performance guide, "Convolutional layers" /
  "Matrix multiplication": channel counts that are multiples of 8 (FP16) or 16 (INT8),
  https://docs.nvidia.com/deeplearning/performance/dl-performance-convolutional/index.html
"""

from __future__ import annotations

#: Targets ``onnxprune check`` knows.
TARGETS: tuple[str, ...] = ("ort-cpu", "ort-cuda", "tensorrt")

#: Operator domains ONNX Runtime's default build registers kernels for.
ORT_DOMAINS: frozenset[str] = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc"})

#: Oldest ORT version with int4 QuantizeLinear/DequantizeLinear kernels, per execution provider.
ORT_INT4_MIN_VERSION: dict[str, tuple[int, int]] = {"ort-cpu": (1, 19), "ort-cuda": (1, 20)}

#: Highest default-domain opset in the TensorRT 10.0 support matrix.
TENSORRT_MAX_OPSET = 20

#: Default-domain ops marked supported ("Y") in the TensorRT 10.0 ONNX operator matrix.
TENSORRT_OPS: frozenset[str] = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv
DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather
GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual
GridSample GroupNormalization GRU HardSigmoid HardSwish Hardmax Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop
LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg
NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape
Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu
Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

#: Ops that use tensor cores on NVIDIA GPUs when their channel widths allow it.
TENSOR_CORE_OPS: frozenset[str] = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})

#: Channel multiple for tensor cores: float/FP16 kernels, INT8 kernels.
TENSOR_CORE_MULTIPLE_FLOAT = 8
TENSOR_CORE_MULTIPLE_INT8 = 16
