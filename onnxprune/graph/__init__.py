"""Computational graph (feature maps as nodes, operations as edges) and its motif hierarchy."""

from onnxprune.graph.compgraph import CompGraph, GroupElements, build_graph
from onnxprune.graph.features import EDGE_FEATURES, NODE_FEATURES, OP_FEATURES
from onnxprune.graph.hierarchy import SINK, SOURCE, Hierarchy, Instance, Level, Motif
from onnxprune.graph.motifs import build_hierarchy
from onnxprune.graph.ops import OP_VOCAB, OpInfo
from onnxprune.graph.state import GraphState, GroupIndex

__all__ = ["EDGE_FEATURES", "NODE_FEATURES", "OP_FEATURES", "OP_VOCAB", "SINK", "SOURCE", "CompGraph",
           "GraphState", "GroupElements", "GroupIndex", "Hierarchy", "Instance", "Level", "Motif", "OpInfo",
           "build_graph", "build_hierarchy"]
