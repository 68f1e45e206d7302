"""Graph encoders (torch-geometric): m-GNN, AGMC GCN + MeanPool / DiffPool, LSTM decoder, AMC state."""

from onnxprune.embed.agmc import DiffPoolEncoder, EncoderOutput, GCNEncoder, LSTMDecoder
from onnxprune.embed.amc import AMC_FEATURES, amc_layers, amc_state, group_layers
from onnxprune.embed.data import (INSTANCE_FEATURES, HierInputs, MotifGraphs, flat_data, group_pool_index,
                                  hier_inputs, pool_groups)
from onnxprune.embed.init import make_generator, reset_parameters_
from onnxprune.embed.mgnn import MGNN, MGNNOutput, MotifConv

__all__ = ["AMC_FEATURES", "INSTANCE_FEATURES", "MGNN", "DiffPoolEncoder", "EncoderOutput", "GCNEncoder",
           "HierInputs", "LSTMDecoder", "MGNNOutput", "MotifConv", "MotifGraphs", "amc_layers", "amc_state",
           "flat_data", "group_layers", "group_pool_index", "hier_inputs", "make_generator", "pool_groups",
           "reset_parameters_"]
