"""Per-group states the DDPG agent sees: AMC's handcrafted features or AGMC's encoder-decoder.

Both follow one protocol (:class:`StateBuilder`): :meth:`begin` at the start of an episode,
then :meth:`state` for group ``t`` given the actions of groups ``0 .. t-1``, called in order.

``amc``: the environment's 11 features ``(t, n, c, h, w, stride, k, FLOPs(t), reduced, rest,
a_{t-1})``, each column divided by its maximum over the groups (:meth:`CompressionEnv.state`).

``agmc``: the model's flat computational graph, with the current keep ratios in its node
features, is embedded by a GCN + Mean Pool encoder (``pool="mean"``, default; or by DiffPool,
``pool="diffpool"``, :mod:`onnxprune.search.agmc_diffpool`, whose graph vector of the graph as
pruned so far also enters every decoder step); an LSTM decoder gives
``s_t = Dec(s_{t-1}, a_{t-1})``, started from the unpruned graph vector ``g`` and fed the group's
pooled node embedding as context; the state is ``[s_t, p_t]`` with ``p_t`` the mean embedding
of the feature maps carrying group ``t``'s channels (divided by its per-column maximum on the
unpruned graph with the initial weights).

The encoder and decoder (:class:`~onnxprune.search.agmc_net.AGMCNet`, seeded) are trained end
to end through the DDPG critic's loss (:class:`~onnxprune.search.ddpg.DDPGConfig` ``train_encoder``).
For that every state also has a compact *memo* (:meth:`StateBuilder.memo`: step, previous
action, decoder state, keep vector) from which :meth:`StateBuilder.encode` rebuilds a batch of
replayed states with gradients (:meth:`StateBuilder.encode_with_loss` adds the encoder's
auxiliary loss: DiffPool's link prediction + entropy terms); the graph's topology is fixed per
model, so the replay buffer stores no graphs.

Joint search (the environment has bits): the ``amc`` state has two more features (the previous
group's ``w_bits / 8`` and ``a_bits / 16``, :data:`~onnxprune.search.env.JOINT_STATE_FEATURES`);
the ``agmc`` state ``[s_t, p_t]`` is followed by the same two numbers, which its memo carries too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from onnxprune.embed import flat_data
from onnxprune.errors import PlanError
from onnxprune.graph import build_graph
from onnxprune.search.agmc_diffpool import AGMCDiffPoolNet, DiffPoolGraph
from onnxprune.search.agmc_net import AGMCNet, GraphTensors, make_memo
from onnxprune.search.env import CompressionEnv, ratios_of
from onnxprune.search.space import SearchSpace

logger = logging.getLogger(__name__)


#: State builders the DDPG agents are named after.
STATE_KINDS: tuple[str, ...] = ("amc", "agmc")
#: Graph poolings of the ``agmc`` encoder.
AGMC_POOLS: tuple[str, ...] = ("mean", "diffpool")


class StateBuilder(Protocol):
    """Gives the state of group ``t`` from the earlier actions of the episode."""

    #: The trainable encoder-decoder behind the states (``None``: handcrafted features).
    net: nn.Module | None
    #: Its graph pooling (``mean`` / ``diffpool``; ``None``: handcrafted features).
    pool: str | None

    @property
    def dim(self) -> int:
        """Length of a state vector."""

    @property
    def memo_dim(self) -> int:
        """Length of a memo (0 without a trainable encoder)."""

    def begin(self) -> None:
        """Start an episode (unpruned model)."""

    def state(self, t: int, actions: Sequence[float]) -> np.ndarray:
        """``[dim]`` float32 state of group ``t``; ``actions`` are the episode's first ``t`` actions."""

    def memo(self) -> np.ndarray:
        """``[memo_dim]`` float32 memo of the last state given by :meth:`state`."""

    def encode(self, memo: Tensor, net: nn.Module) -> Tensor:
        """``[B, dim]`` states of ``[B, memo_dim]`` memos computed by ``net`` (a copy of :attr:`net`)."""

    def encode_with_loss(self, memo: Tensor, net: nn.Module) -> tuple[Tensor, Tensor | None]:
        """:meth:`encode`'s states and the encoder's auxiliary training loss (``None``: it has none)."""


class AMCStates:
    """AMC's handcrafted state (normalized), read from the environment."""

    net: nn.Module | None = None
    pool: str | None = None

    def __init__(self, env: CompressionEnv[Any]) -> None:
        """Use ``env``'s features."""
        self.env = env

    @property
    def dim(self) -> int:
        """11 features."""
        return self.env.state_dim

    @property
    def memo_dim(self) -> int:
        """No memo: the features are not learned."""
        return 0

    def begin(self) -> None:
        """Nothing to reset."""

    def state(self, t: int, actions: Sequence[float]) -> np.ndarray:
        """``env.state(t, actions)``."""
        return self.env.state(t, actions)

    def memo(self) -> np.ndarray:
        """Empty."""
        return np.zeros(0, np.float32)

    def encode(self, memo: Tensor, net: nn.Module) -> Tensor:
        """Not available: there is nothing to train."""
        raise ValueError("AMC states have no encoder to run")

    def encode_with_loss(self, memo: Tensor, net: nn.Module) -> tuple[Tensor, Tensor | None]:
        """Not available: there is nothing to train."""
        raise ValueError("AMC states have no encoder to run")


class AGMCStates:
    """AGMC's encoder-decoder state ``[s_t, p_t]`` (seeded encoder and decoder, trainable)."""

    def __init__(self, space: SearchSpace, *, generator: torch.Generator, embed_dim: int = 64,
                 state_dim: int = 64, hidden: int = 64, layers: int = 3, pool: str = "mean",
                 clusters: tuple[int, ...] = (32, 4), joint: CompressionEnv[Any] | None = None) -> None:
        """Build the graph of ``space``'s model and the seeded encoder / decoder.

        Args:
            space: The search space (its groups, in decision order, are the steps).
            generator: Seeds the encoder and decoder weights.
            embed_dim: Size of node / graph embeddings (``p_t``).
            state_dim: Size of the decoder states (``s_t``).
            hidden: Hidden size of the GCN.
            layers: GCN layers (mean: 2 or more, the last one read out; diffpool: per embed / pool
                network of the first level).
            pool: ``mean`` (GCN + Mean Pool, batched over receptive fields) or ``diffpool`` (a full
                DiffPool run on the graph as pruned so far at every step).
            clusters: DiffPool's intermediate cluster counts (``diffpool`` only).
            joint: The joint search's environment: its bit features follow every state.
        """
        self.joint = joint if joint is not None and joint.bits is not None else None
        self._extra = 2 if self.joint is not None else 0
        if pool not in AGMC_POOLS:
            raise PlanError(f"--agmc-pool {pool} is not supported; use one of {', '.join(AGMC_POOLS)}")
        self.space, self.pool = space, pool
        groups = [space.analysis.groups[gid] for gid in space.group_ids]
        cg = build_graph(space.analysis.model).with_groups(groups)
        data = flat_data(cg)
        self.embed_dim, self.state_dim = embed_dim, state_dim
        self.graph: GraphTensors | DiffPoolGraph
        if pool == "diffpool":
            self.graph = DiffPoolGraph.build(cg, tuple(space.group_ids), data.edge_index)
            diffpool = AGMCDiffPoolNet(data.num_features, hidden, embed_dim, state_dim, clusters, layers,
                                       generator=generator)
            diffpool.calibrate(self.graph)
            self.net: nn.Module | None = diffpool
        else:
            self.graph = GraphTensors.build(cg, tuple(space.group_ids), data.edge_index, hops=layers - 1)
            mean = AGMCNet(data.num_features, hidden, embed_dim, state_dim, layers, generator=generator)
            with torch.no_grad():
                pooled = mean.groups(self.graph, torch.ones(len(space)))
                mean.scale.copy_(pooled.abs().max(dim=0).values.clamp(min=1e-6))
            self.net = mean
        self._keep = np.ones(len(space), np.float32)
        self._hc: tuple[Tensor, Tensor] | None = None
        self._memo: np.ndarray | None = None
        self._next = 0

    @property
    def _net(self) -> nn.Module:
        if not isinstance(self.net, (AGMCNet, AGMCDiffPoolNet)):
            raise TypeError("AGMCStates.net must be an AGMCNet or an AGMCDiffPoolNet")
        return self.net

    @property
    def dim(self) -> int:
        """``state_dim + embed_dim`` (joint: + 2 bit features)."""
        return self.state_dim + self.embed_dim + self._extra

    @property
    def memo_dim(self) -> int:
        """``2 + 2 state_dim + groups`` (joint: + 2 bit features)."""
        return 2 + 2 * self.state_dim + len(self.space) + self._extra

    def begin(self) -> None:
        """Reset the keep ratios and the decoder."""
        self._keep = np.ones(len(self.space), np.float32)
        self._hc = (torch.zeros(1, self.state_dim), torch.zeros(1, self.state_dim))
        self._next = 0

    @torch.no_grad()
    def state(self, t: int, actions: Sequence[float]) -> np.ndarray:
        """Re-embed the graph with keep ratios ``1 - a`` so far, step the decoder, pool group ``t``."""
        if self._hc is None or len(actions) != t or t != self._next:
            raise ValueError("call begin() and then state(t, actions[:t]) for t = 0, 1, ... in order")
        prev = float(ratios_of(actions)[t - 1]) if t > 0 else 0.0
        if t > 0:
            self._keep[t - 1] = float(np.clip(1.0 - prev, 0.0, 1.0))
        memo = make_memo(t, prev, self._hc, self._keep)
        out, self._hc = self._net(self.graph, torch.from_numpy(memo).unsqueeze(0))
        self._next = t + 1
        if self.joint is None:
            self._memo = memo
            return out[0].numpy().astype(np.float32)
        extra = np.asarray(self.joint.bit_features(actions[t - 1] if t > 0 else None), np.float32)
        self._memo = np.concatenate([memo, extra]).astype(np.float32)
        return np.concatenate([out[0].numpy(), extra]).astype(np.float32)

    def memo(self) -> np.ndarray:
        """The memo of the last state."""
        if self._memo is None:
            raise ValueError("call state() before memo()")
        return self._memo

    def encode(self, memo: Tensor, net: nn.Module) -> Tensor:
        """``net(graph, memo)``'s states (with gradients when ``net``'s parameters need them)."""
        if self._extra:
            return torch.cat([net(self.graph, memo[:, :-self._extra])[0], memo[:, -self._extra:]], dim=1)
        return net(self.graph, memo)[0]

    def encode_with_loss(self, memo: Tensor, net: nn.Module) -> tuple[Tensor, Tensor | None]:
        """:meth:`encode`'s states and, for ``diffpool``, DiffPool's link + entropy loss of the batch."""
        if isinstance(net, AGMCDiffPoolNet) and isinstance(self.graph, DiffPoolGraph):
            base = memo[:, :-self._extra] if self._extra else memo
            states, _, aux = net.run(self.graph, base)
            if self._extra:
                states = torch.cat([states, memo[:, -self._extra:]], dim=1)
            return states, aux
        return self.encode(memo, net), None


def make_states(kind: str, env: CompressionEnv[Any], *, seed: int, pool: str = "mean") -> StateBuilder:
    """The ``amc`` or ``agmc`` state of ``env``'s groups (``agmc`` seeded with ``seed``, graph pooling ``pool``)."""
    if kind != "agmc" and pool != "mean":
        raise PlanError(f"--agmc-pool {pool} applies to --agent agmc only; drop it or pass --agent agmc")
    if kind == "amc":
        return AMCStates(env)
    if kind == "agmc":
        return AGMCStates(env.space, generator=torch.Generator().manual_seed(seed), pool=pool, joint=env)
    raise PlanError(f"state '{kind}' is not supported; use one of {', '.join(STATE_KINDS)}")
