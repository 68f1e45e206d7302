"""Per-group states the DDPG agent sees: AMC's handcrafted features or AGMC's encoder-decoder.

Both follow one protocol (:class:`StateBuilder`): :meth:`begin` at the start of an episode,
then :meth:`state` for group ``t`` given the actions of groups ``0 .. t-1``, called in order.

``amc``: the environment's 11 features ``(t, n, c, h, w, stride, k, FLOPs(t), reduced, rest,
a_{t-1})``, each column divided by its maximum over the groups (:meth:`CompressionEnv.state`).

``agmc``: the model's flat computational graph, with the current keep ratios in its node
features (:meth:`CompGraph.set_keep` after every action), is embedded by a GCN + Mean Pool
encoder; an LSTM decoder gives ``s_t = Dec(s_{t-1}, a_{t-1})``, started from the unpruned graph
vector ``g`` and fed the group's pooled node embedding as context; the state is
``[s_t, p_t]`` with ``p_t`` the mean embedding of the feature maps carrying group ``t``'s
channels (divided by its per-column maximum on the unpruned graph).

The encoder and decoder are **fixed, seeded random networks**, not trained. AGMC trains them
end to end through the critic's loss; here that would mean re-running the encoder on every
replayed transition's pruned graph (64 graphs per update, one update per group step), which
costs more than scoring a candidate on this 2-core machine. Random GCN/LSTM features still
separate the groups (position, shape, neighbourhood, keep ratios so far) and the actor and
critic learn on top of them; training the encoder is the natural next step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from onnxprune.embed import GCNEncoder, LSTMDecoder, flat_data, group_pool_index, pool_groups
from onnxprune.errors import PlanError
from onnxprune.graph import build_graph
from onnxprune.search.env import CompressionEnv
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)


class StateBuilder(Protocol):
    """Gives the state of group ``t`` from the earlier actions of the episode."""

    @property
    def dim(self) -> int:
        """Length of a state vector."""

    def begin(self) -> None:
        """Start an episode (unpruned model)."""

    def state(self, t: int, actions: Sequence[float]) -> np.ndarray:
        """``[dim]`` float32 state of group ``t``; ``actions`` are the episode's first ``t`` actions."""


class AMCStates:
    """AMC's handcrafted state (normalized), read from the environment."""

    def __init__(self, env: CompressionEnv[Any]) -> None:
        """Use ``env``'s features."""
        self.env = env

    @property
    def dim(self) -> int:
        """11 features."""
        return self.env.state_dim

    def begin(self) -> None:
        """Nothing to reset."""

    def state(self, t: int, actions: Sequence[float]) -> np.ndarray:
        """``env.state(t, actions)``."""
        return self.env.state(t, actions)


class AGMCStates:
    """AGMC's encoder-decoder state ``[s_t, p_t]`` (fixed, seeded random encoder and decoder)."""

    def __init__(self, space: SearchSpace, *, generator: torch.Generator, embed_dim: int = 64,
                 state_dim: int = 64, hidden: int = 64, layers: int = 3) -> None:
        """Build the graph of ``space``'s model and the seeded encoder / decoder.

        Args:
            space: The search space (its groups, in decision order, are the steps).
            generator: Seeds the encoder and decoder weights.
            embed_dim: Size of node / graph embeddings (``p_t``).
            state_dim: Size of the decoder states (``s_t``).
            hidden: Hidden size of the GCN.
            layers: GCN layers.
        """
        self.space = space
        groups = [space.analysis.groups[gid] for gid in space.group_ids]
        self.graph = build_graph(space.analysis.model).with_groups(groups)
        data = flat_data(self.graph)
        self.edge_index = data.edge_index
        self.pool_index = group_pool_index(self.graph)
        self.encoder = GCNEncoder(data.num_features, hidden, embed_dim, layers, generator=generator).eval()
        self.decoder = LSTMDecoder(embed_dim, state_dim, context_dim=embed_dim, generator=generator).eval()
        self.embed_dim, self.state_dim = embed_dim, state_dim
        with torch.no_grad():
            out = self.encoder(data.x, self.edge_index)
            pooled = pool_groups(out.nodes, self.pool_index, len(space))
        self.graph_vector = out.graph
        self.scale = pooled.abs().max(dim=0).values.clamp(min=1e-6)
        self._hc: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def dim(self) -> int:
        """``state_dim + embed_dim``."""
        return self.state_dim + self.embed_dim

    @torch.no_grad()
    def begin(self) -> None:
        """Reset the decoder and the graph's keep ratios."""
        self.graph.set_keep({gid: 1.0 for gid in self.space.group_ids})
        self._hc = self.decoder.initial(self.graph_vector)

    @torch.no_grad()
    def state(self, t: int, actions: Sequence[float]) -> np.ndarray:
        """Re-embed the graph with keep ratios ``1 - a`` so far, step the decoder, pool group ``t``."""
        if self._hc is None or len(actions) != t:
            raise ValueError("call begin() and then state(t, actions[:t]) for t = 0, 1, ... in order")
        if t > 0:
            gid = self.space.group_ids[t - 1]
            self.graph.set_keep({gid: float(np.clip(1.0 - actions[t - 1], 0.0, 1.0))})
        x = torch.from_numpy(self.graph.node_features())
        nodes = self.encoder(x, self.edge_index).nodes
        pooled = pool_groups(nodes, self.pool_index, len(self.space))[t] / self.scale
        prev = torch.tensor([actions[t - 1] if t > 0 else 0.0], dtype=torch.float32)
        s_t, self._hc = self.decoder.step(prev, self._hc, pooled.unsqueeze(0))
        return torch.cat([s_t[0], pooled]).numpy().astype(np.float32)


#: State builders the DDPG agents are named after.
STATE_KINDS: tuple[str, ...] = ("amc", "agmc")


def make_states(kind: str, env: CompressionEnv[Any], *, seed: int) -> StateBuilder:
    """The ``amc`` or ``agmc`` state of ``env``'s groups (``agmc`` seeded with ``seed``)."""
    if kind == "amc":
        return AMCStates(env)
    if kind == "agmc":
        return AGMCStates(env.space, generator=torch.Generator().manual_seed(seed))
    raise PlanError(f"state '{kind}' is not supported; use one of {', '.join(STATE_KINDS)}")
