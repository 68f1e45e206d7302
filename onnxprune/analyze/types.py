"""Plain data produced by the analyze stage.

Vocabulary:
    atom: one output channel of one *root* (an op that creates channels: Conv, Gemm, MatMul
        with a weight, or a channel Pad). Atoms are numbered densely, root by root.
    unit: a set of atoms that must be removed together (an equivalence class of couplings).
    group: the units that share roots (connected through couplings); a plan keeps a subset
        of a group's units. A group's channel ``i`` is its ``i``-th unit.

Worked example (option-A CIFAR ResNet, stage 1 with 16 channels)::

    stem conv1 ─ bn ─ relu ─┬─ conv(1.0.1) ─ bn ─ relu ─ conv(1.0.2) ─ bn ─ Add ─ relu ─┬─ ...
                            └───────────────────────────────────────────────┘

    Roots conv1, 1.0.2, 1.1.2, 1.2.2 are coupled channel-by-channel through the residual
    Adds: one *residual group* of 16 units whose members are those convs' outputs, the BN
    parameters, the Add inputs/outputs, and the input channels of every conv reading the
    stream (1.0.1, 1.1.1, 1.2.1 and the stage-2 shortcut Pad). Each block's inner conv
    (1.i.1) is a root of its own *inner group* (16 units) consumed only by 1.i.2.
    The stage-2 shortcut Pad (8 zero channels on each side) starts a new root: the stage-2
    residual group is *linked* to stage 1 (unit 8+k of stage 2 reads unit k of stage 1)
    but pruned independently; the rewrite gathers from a zero-augmented tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxprune.load import Model


@dataclass(frozen=True)
class ChannelRef:
    """Where a group lives on one tensor: positions ``[start, stop)`` of ``axis``."""

    tensor: str
    axis: int
    start: int
    stop: int


@dataclass(frozen=True)
class Group:
    """A set of channels pruned together.

    Attributes:
        id: Dense id, in topological order of the group's first root.
        size: Number of units (prunable channels, or channel blocks of a grouped conv).
        members: Tensors (and axis spans) carrying the group's channels.
        producers: Names of nodes whose output channels are in the group.
        consumers: Names of Conv/Gemm/MatMul nodes whose input channels are in the group.
        frozen_reason: Why the group cannot be pruned, or ``None`` if it can.
        unit_width: Channels per unit on the widest producer (1 except grouped convs).
    """

    id: int
    size: int
    members: tuple[ChannelRef, ...]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    frozen_reason: str | None = None
    unit_width: int = 1

    @property
    def prunable(self) -> bool:
        """True when the group may lose channels."""
        return self.frozen_reason is None and self.size > 1


@dataclass(frozen=True)
class Root:
    """An op output that creates channels (atoms ``first_atom .. first_atom + size - 1``).

    ``weight``/``weight_axis`` locate the producer weight whose slices along that axis
    are the channels' filters (``None`` for a Pad root).
    """

    node: str
    tensor: str
    axis: int
    size: int
    first_atom: int
    weight: str | None
    weight_axis: int


@dataclass(frozen=True)
class Labels:
    """Channel labels of one tensor: ``ids[p]`` is the atom at position ``p`` of ``axis``.

    ``-1`` marks a fixed position (from an unlabeled input, e.g. the image): always kept.
    """

    axis: int
    ids: np.ndarray


@dataclass(frozen=True)
class SliceConst:
    """Slice initializer input ``index`` of ``node`` along ``axis`` by ``mask_of``'s keep mask."""

    node: str
    index: int
    axis: int
    mask_of: str


@dataclass(frozen=True)
class SetShapeDims:
    """Rewrite entries of a constant shape input (Reshape target, Resize sizes).

    ``dims`` maps a position of the shape vector to the tensor whose labeled-axis kept
    count becomes the new value (entries equal to 0 or -1 are left alone).
    """

    node: str
    index: int
    dims: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class SetGroups:
    """Set the ``group`` attribute of a grouped Conv/ConvTranspose from kept blocks of ``mask_of``."""

    node: str
    groups: int
    mask_of: str


@dataclass(frozen=True)
class SplitSizes:
    """Make the split sizes of a Split on the labeled axis the kept counts of its outputs."""

    node: str


@dataclass(frozen=True)
class Select:
    """Channel selection along ``axis``: output position ``j`` reads input ``src[j]``.

    ``src[j] == -1`` means a constant ``fill``. Covers channel Slice, Gather and Pad.
    ``strip`` names what to remove from the original node (``"node"``: replace it;
    ``"slice_axis"``/``"pad_axis"``: drop only the channel entry and append the select).
    """

    node: str
    axis: int
    src: np.ndarray
    fill: float
    strip: str


Edit = SliceConst | SetShapeDims | SetGroups | SplitSizes | Select


@dataclass(frozen=True)
class Link:
    """Unit ``out_unit`` of group ``out_group`` reads unit ``in_unit`` of ``in_group`` (via a Pad)."""

    out_group: int
    out_unit: int
    in_group: int
    in_unit: int


@dataclass(frozen=True)
class Analysis:
    """Everything later stages need about a model's channel structure.

    Attributes:
        model: The analyzed model.
        groups: Every group, prunable or frozen.
        labels: Tensor name -> channel labels.
        roots: Every channel-creating op output.
        atom_unit: Atom id -> global unit id.
        unit_group: Global unit id -> group id.
        group_units: Group id -> its global unit ids in local order.
        edits: What the rewrite must change, per node.
        links: Soft links through channel Pads.
        frozen: ``(reason, ...)`` for every freeze recorded (also on groups).
    """

    model: Model
    groups: tuple[Group, ...]
    labels: dict[str, Labels]
    roots: tuple[Root, ...]
    atom_unit: np.ndarray
    unit_group: np.ndarray
    group_units: tuple[np.ndarray, ...]
    edits: tuple[Edit, ...]
    links: tuple[Link, ...]
    frozen: tuple[str, ...]

    @property
    def prunable_groups(self) -> tuple[Group, ...]:
        """Groups that may lose channels."""
        return tuple(g for g in self.groups if g.prunable)
