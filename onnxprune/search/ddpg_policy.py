"""A trained DDPG agent on disk (``<output>.agent.pt``), to start a search on another model.

The file holds the actor, the critic, their targets and, for ``agmc``, the encoder-decoder
(and its target), with the agent kind, the state size and the run's :class:`DDPGConfig` as a
dict. Both DDPG states have a size that does not depend on the model (AMC: 11 features; AGMC:
decoder state + embedding), so a policy trained on one model can act on another (topology
transfer). Optimizers and the replay buffer are not kept: they belong to the old model's run.
For ``agmc`` the encoder's ``scale`` buffer (the per-column normalization of ``p_t``, fixed at
the start of the source run) travels with its weights, so the same local structure gives the
same state on the new model.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import torch

from onnxprune.errors import PlanError

logger = logging.getLogger(__name__)

POLICY_FORMAT = "onnxprune-ddpg-agent-1"


@dataclass(frozen=True)
class DDPGPolicy:
    """The networks of a trained DDPG agent.

    Attributes:
        kind: The state the agent was trained on (``amc`` or ``agmc``).
        state_dim: Length of its state vectors.
        config: The run's ``DDPGConfig`` as a dict (for the record).
        networks: ``state_dict`` per network: ``actor``, ``critic``, ``actor_target``,
            ``critic_target`` and, for ``agmc``, ``net`` (and ``net_target`` when it was trained).
        pool: The ``agmc`` encoder's graph pooling (``mean`` / ``diffpool``; files written before the
            option read as ``mean``), ``None`` for ``amc``.
    """

    kind: str
    state_dim: int
    config: dict[str, Any]
    networks: dict[str, Any]
    pool: str | None = None

    def to_bytes(self) -> bytes:
        """``torch.save`` of a plain dict (loadable with ``weights_only=True``)."""
        blob = io.BytesIO()
        torch.save({"format": POLICY_FORMAT, "kind": self.kind, "state_dim": self.state_dim,
                    "config": dict(self.config), "networks": self.networks, "pool": self.pool}, blob)
        return blob.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str) -> DDPGPolicy:
        """Inverse of :meth:`to_bytes`; ``source`` names the file in errors."""
        try:
            raw = torch.load(io.BytesIO(data), weights_only=True)
            if not isinstance(raw, dict) or raw.get("format") != POLICY_FORMAT:
                found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
                raise ValueError(f"format {found} (expected {POLICY_FORMAT})")
            kind = str(raw["kind"])
            pool = raw.get("pool", "mean" if kind == "agmc" else None)
            return cls(kind=kind, state_dim=int(raw["state_dim"]), config=dict(raw["config"]),
                       networks=dict(raw["networks"]), pool=None if pool is None else str(pool))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
            reason = next(iter(str(exc).splitlines()), type(exc).__name__)
            raise PlanError(f"{source} is not an onnxprune DDPG agent ({reason}); pass a <out>.agent.pt written "
                            "by `onnxprune compress --agent amc` or `--agent agmc`") from exc

    def check(self, kind: str, state_dim: int, source: str, pool: str | None = None) -> None:
        """Refuse a policy of another agent kind, graph pooling or state size (one-line :class:`PlanError`)."""
        if self.kind != kind:
            raise PlanError(f"{source} was trained by --agent {self.kind}, not {kind}; pass --agent {self.kind} "
                            f"or a policy from an --agent {kind} run")
        if pool is not None and self.pool != pool:
            raise PlanError(f"{source} was trained with --agmc-pool {self.pool}, not {pool}; pass --agmc-pool "
                            f"{self.pool} or a policy from an --agmc-pool {pool} run")
        if self.state_dim != state_dim:
            raise PlanError(f"{source} has states of size {self.state_dim}, this --agent {kind} run has "
                            f"{state_dim}; pass a policy trained with the same state settings")
