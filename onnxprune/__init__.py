"""onnxprune: compress exported ONNX models by structured pruning and quantization."""

__version__ = "0.1.0"
