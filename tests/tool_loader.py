"""Import a script of tools/ (no package) by file name, for tests of the benchmark tools."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_tool(name: str) -> ModuleType:
    """``tools/<name>.py`` as a module (registered in ``sys.modules``: its dataclasses look it up)."""
    path = TOOLS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_tool", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
