"""``--no-spin`` reaches ONNX Runtime's session options; the default leaves ORT's own."""

from __future__ import annotations

import pytest

from onnxprune.cli import build_parser
from onnxprune.commands._runtime_options import runtime_from


def test_no_spin_sets_the_session_config_entry() -> None:
    parser = build_parser()
    spin_off = runtime_from(parser.parse_args(["bench", "m.onnx", "--no-spin"])).options()
    default = runtime_from(parser.parse_args(["bench", "m.onnx"])).options()
    assert spin_off.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError, match="allow_spinning"):  # not set: ORT's default (spinning)
        default.get_session_config_entry("session.intra_op.allow_spinning")
