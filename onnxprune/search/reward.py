"""Rewards of a candidate (AGMC): pure functions of its validation error and resource.

``error`` is a fraction in ``[0, 1]`` (1 - top-1 accuracy). Higher rewards are better.
``latency`` is the candidate's predicted milliseconds (:mod:`onnxprune.search.latency`), given
when the search space has a latency table, else ``None``.
"""

from __future__ import annotations

from types import MappingProxyType

import math
from collections.abc import Callable, Mapping

from onnxprune.errors import PlanError

RewardFn = Callable[[float, int, int, "float | None"], float]


def r_err(error: float, macs: int, params: int, latency: float | None = None) -> float:  # noqa: ARG001
    """Resource-constrained reward ``R_err = -error``."""
    return -error


def r_flops(error: float, macs: int, params: int, latency: float | None = None) -> float:  # noqa: ARG001
    """Accuracy-guaranteed reward ``R_FLOPs = -error * log(FLOPs)``."""
    return -error * math.log(max(macs, 1))


def r_param(error: float, macs: int, params: int, latency: float | None = None) -> float:  # noqa: ARG001
    """Accuracy-guaranteed reward ``R_Param = -error * log(#params)``."""
    return -error * math.log(max(params, 1))


def r_latency(error: float, macs: int, params: int, latency: float | None = None) -> float:  # noqa: ARG001
    """Latency-aware reward ``R_lat = -error * log(latency in microseconds)``.

    Under a MACs or params target, candidates of equal cost differ in table latency: widths
    that are slow on the device lose. Raises :class:`PlanError` without a latency.
    """
    if latency is None:
        raise PlanError("--reward latency needs the per-layer latency table; compress measures it when "
                        "--reward latency or --metric latency is given")
    return -error * math.log(max(1000.0 * latency, 1.0))


REWARDS: Mapping[str, RewardFn] = MappingProxyType({"err": r_err, "flops": r_flops, "param": r_param,
                                                    "latency": r_latency})


def reward_fn(name: str) -> RewardFn:
    """The reward called ``name`` (``err``, ``flops``, ``param`` or ``latency``)."""
    if name not in REWARDS:
        raise PlanError(f"--reward {name} is not supported; use one of {', '.join(REWARDS)}")
    return REWARDS[name]
