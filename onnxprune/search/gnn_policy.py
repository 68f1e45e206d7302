"""The GNN-RL policy: m-GNN state of the current (pruned) network, per-group Gaussian actions, MLP critic.

The state of a search step is the model's hierarchical computational graph *as currently
pruned*: :class:`PolicyGraph` holds the graph built once from ONNX and updates it in place with
:meth:`~onnxprune.graph.CompGraph.set_keep` (no rebuild), then :func:`~onnxprune.embed.hier_inputs`
turns it into m-GNN inputs in about a millisecond.

:class:`GNNPolicy` embeds those inputs with :class:`~onnxprune.embed.MGNN`, mean-pools the
top-level node embeddings that describe each prunable group (:func:`~onnxprune.embed.pool_groups`)
and runs one shared MLP per group on ``[group embedding, graph embedding, group features, step
features]``. The output is the mean of a Gaussian over that group's pruning ratio. Because the
head is shared and reads only per-group rows, the policy works on any number of groups (topology
transfer: an agent trained on ResNet-20 runs on ResNet-56) and permuting the groups permutes the
action distribution the same way. The critic is an MLP on the graph embedding and step features.

Joint search (``action_dim=3``): the head gives three means per group, the fraction removed
(``max_ratio * sigmoid``) and the weight / activation bit actions (``sigmoid``, in ``[0, 1]``),
and the group rows carry the bits chosen so far, ``w_bits / 8`` and ``a_bits / 16``
(:data:`JOINT_GROUP_FEATURES`; the graph's bit feature is set to each group's weight bits).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.distributions import Normal

from onnxprune.embed import MGNN, HierInputs, group_pool_index, hier_inputs, pool_groups, reset_parameters_
from onnxprune.graph import CompGraph, Hierarchy, build_graph, build_hierarchy
from onnxprune.search.rescale import group_weights
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)

#: Per-group features next to the pooled embedding: removed fraction so far, resource share,
#: log2 of the group's width / 12.
GROUP_FEATURES: tuple[str, ...] = ("removed", "share", "log_width")
#: The joint search's extra per-group features: current weight bits / 8, activation bits / 16.
JOINT_GROUP_FEATURES: tuple[str, ...] = ("w_bits", "a_bits")
#: Features of the step: progress through the episode (0 at the first step) and the target.
STEP_FEATURES: tuple[str, ...] = ("progress", "target")


@dataclass(frozen=True)
class Observation:
    """What the policy sees at one step.

    Attributes:
        inputs: m-GNN inputs of the current (pruned) graph.
        pool_index: ``[2, P]`` (group position, top node) pairs, from :func:`group_pool_index`.
        groups: ``[G, len(GROUP_FEATURES)]`` per-group features.
        step: ``[len(STEP_FEATURES)]`` step features.
    """

    inputs: HierInputs
    pool_index: Tensor
    groups: Tensor
    step: Tensor


def static_group_features(space: SearchSpace, metric: str) -> np.ndarray:
    """``[G, 2]`` per-group features that do not change while pruning: resource share, log2 width / 12."""
    widths = np.log2(np.maximum(np.asarray(space.sizes, dtype=np.float64), 1.0)) / 12.0
    return np.stack([group_weights(space, metric), widths], axis=1)


class PolicyGraph:
    """The searched model's hierarchical graph, groups in search-space order, updated in place."""

    def __init__(self, space: SearchSpace, metric: str) -> None:
        """Build the graph and hierarchy once from the space's model.

        Args:
            space: The search space (its prunable groups become the graph's groups, in order).
            metric: ``macs`` or ``params``: the resource share given to each group as a feature.
        """
        analysis = space.analysis
        graph = build_graph(analysis.model)
        self.hierarchy: Hierarchy = build_hierarchy(graph)
        self.graph: CompGraph = graph.with_groups([analysis.groups[gid] for gid in space.group_ids])
        self.group_ids = space.group_ids
        self.pool_index = group_pool_index(self.graph, self.hierarchy)
        self._static = static_group_features(space, metric)

    def observe(self, removed: Sequence[float], progress: float, target: float,
                bits: np.ndarray | None = None) -> Observation:
        """The observation of the model with ``removed[i]`` of group ``i``'s channels pruned.

        ``bits`` (joint search): ``[G, 2]`` current ``(w_bits, a_bits)`` per group.
        """
        removed_arr = np.clip(np.asarray(removed, dtype=np.float64), 0.0, 1.0)
        self.graph.set_keep({gid: 1.0 - float(r) for gid, r in zip(self.group_ids, removed_arr)})
        groups = np.concatenate([removed_arr[:, None], self._static], axis=1)
        if bits is not None:
            bits = np.asarray(bits, dtype=np.float64).reshape(-1, 2)
            self.graph.set_bits({gid: float(w) for gid, w in zip(self.group_ids, bits[:, 0])})
            groups = np.concatenate([groups, bits[:, :1] / 8.0, bits[:, 1:] / 16.0], axis=1)
        return Observation(inputs=hier_inputs(self.graph, self.hierarchy), pool_index=self.pool_index,
                           groups=torch.as_tensor(groups, dtype=torch.float32),
                           step=torch.tensor([progress, target], dtype=torch.float32))


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


class GNNPolicy(nn.Module):
    """m-GNN encoder with a per-group Gaussian actor and a graph-level critic.

    Args:
        hidden: Embedding and MLP width.
        layers: Message-passing rounds per m-GNN stage.
        max_ratio: Actor means lie in ``(0, max_ratio)`` (``max_ratio * sigmoid``).
        init_std: Initial standard deviation of the actions (one learned scalar for all groups).
        generator: Seeds every parameter.
        detach_critic: The critic reads the graph embedding without a gradient, so the value loss
            trains only the critic's MLP and never moves the actor's (shared) encoder.
    """

    def __init__(self, hidden: int, layers: int, *, max_ratio: float, init_std: float,
                 generator: torch.Generator, detach_critic: bool = False, action_dim: int = 1) -> None:
        super().__init__()
        self.hidden, self.layers, self.max_ratio, self.action_dim = hidden, layers, max_ratio, action_dim
        self.detach_critic = detach_critic
        self.encoder = MGNN(hidden, layers=layers, generator=generator)
        extra = len(JOINT_GROUP_FEATURES) if action_dim > 1 else 0
        head_in = 2 * hidden + len(GROUP_FEATURES) + extra + len(STEP_FEATURES)
        self.actor = _mlp([head_in, hidden, hidden, action_dim])
        self.critic = _mlp([hidden + len(STEP_FEATURES), hidden, hidden, 1])
        self.log_std = nn.Parameter(torch.zeros(()))
        reset_parameters_(self.actor, generator)
        reset_parameters_(self.critic, generator)
        with torch.no_grad():  # near-uniform first policy (cleanrl scales the last actor layer by 0.01)
            self.actor[-1].weight.mul_(0.01)
            self.log_std.fill_(math.log(init_std))

    def forward(self, obs: Observation) -> tuple[Normal, Tensor]:
        """Action distribution ``[G]`` (fraction removed per group; joint ``[G, 3]``) and state value ``[]``."""
        out = self.encoder(obs.inputs)
        num_groups = obs.groups.shape[0]
        per_group = pool_groups(out.nodes, obs.pool_index, num_groups)
        rows = torch.cat([per_group, out.graph.expand(num_groups, -1), obs.groups,
                          obs.step.expand(num_groups, -1)], dim=1)
        if self.action_dim == 1:
            mean = self.max_ratio * torch.sigmoid(self.actor(rows).squeeze(-1))
        else:
            squashed = torch.sigmoid(self.actor(rows))
            mean = torch.cat([self.max_ratio * squashed[:, :1], squashed[:, 1:]], dim=1)
        graph = out.graph.detach() if self.detach_critic else out.graph
        value = self.critic(torch.cat([graph, obs.step])).squeeze(-1)
        return Normal(mean, self.log_std.exp().expand_as(mean)), value
