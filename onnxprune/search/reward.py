"""Rewards of a candidate (AGMC): pure functions of its validation error and resource.

``error`` is a fraction in ``[0, 1]`` (1 - top-1 accuracy). Higher rewards are better.
"""

from __future__ import annotations

from types import MappingProxyType

import math
from collections.abc import Callable, Mapping

from onnxprune.errors import PlanError

RewardFn = Callable[[float, int, int], float]


def r_err(error: float, macs: int, params: int) -> float:  # noqa: ARG001 - common signature
    """Resource-constrained reward ``R_err = -error``."""
    return -error


def r_flops(error: float, macs: int, params: int) -> float:  # noqa: ARG001 - common signature
    """Accuracy-guaranteed reward ``R_FLOPs = -error * log(FLOPs)``."""
    return -error * math.log(max(macs, 1))


def r_param(error: float, macs: int, params: int) -> float:  # noqa: ARG001 - common signature
    """Accuracy-guaranteed reward ``R_Param = -error * log(#params)``."""
    return -error * math.log(max(params, 1))


REWARDS: Mapping[str, RewardFn] = MappingProxyType({"err": r_err, "flops": r_flops, "param": r_param})


def reward_fn(name: str) -> RewardFn:
    """The reward called ``name`` (``err``, ``flops`` or ``param``)."""
    if name not in REWARDS:
        raise PlanError(f"--reward {name} is not supported; use one of {', '.join(REWARDS)}")
    return REWARDS[name]
