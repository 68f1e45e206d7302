"""Fine-tune stage: the ONNX graph as a trainable torch module, trained values written back.

Public face: :class:`GraphModule` (one torch function per ONNX op, initializers as parameters
keyed by initializer name), :func:`write_back` (new values into the same initializers).
"""

from onnxprune.finetune.interpreter import GraphModule, check_supported, module_values, run_module, write_back

__all__ = ["GraphModule", "check_supported", "module_values", "run_module", "write_back"]
