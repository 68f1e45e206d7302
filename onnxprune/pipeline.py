"""The only place stages meet: load -> analyze -> (embed -> search) -> rewrite -> evaluate -> report.

Commands in ``onnxprune/commands`` call these functions; stages never call each other
except through the plain dataclasses they return.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
