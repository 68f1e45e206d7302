"""Channel rounding (``--round-to``): multiples of N, or the whole group, whichever is nearest."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from onnxprune.plan import keep_count, round_width


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 600), round_to=st.integers(1, 32), ratio=st.floats(0.0, 0.95))
def test_keep_count_is_a_nearest_allowed_width(size: int, round_to: int, ratio: float) -> None:
    keep = keep_count(size, ratio, round_to)
    wanted = keep_count(size, ratio, 1)
    if size <= round_to:
        assert keep == size  # small groups stay whole
        return
    allowed = {size, *range(round_to, size + 1, round_to)}
    assert keep in allowed
    assert abs(keep - wanted) == min(abs(w - wanted) for w in allowed)


@given(size=st.integers(1, 600), round_to=st.integers(1, 32))
def test_a_group_left_alone_is_never_cut(size: int, round_to: int) -> None:
    assert keep_count(size, 0.0, round_to) == size


def test_examples() -> None:
    assert [round_width(k, 100, 8) for k in (100, 99, 98, 97, 50, 3)] == [100, 100, 96, 96, 48, 8]
    assert round_width(12, 10, 16) == 10 and round_width(40, 64, 8) == 40 and round_width(37, 64, 1) == 37
