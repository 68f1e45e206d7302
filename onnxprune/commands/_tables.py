"""Tables shared by commands."""

from __future__ import annotations

from rich.table import Table

from onnxprune.analyze.cost import Cost


def cost_table(title: str, before: Cost, after: Cost, bytes_before: int, bytes_after: int) -> Table:
    """MACs, params and bytes on disk before and after, with their ratios."""
    table = Table(title=title)
    for column in ("", "before", "after", "ratio"):
        table.add_column(column, justify="right")
    for name, old, new in (("MACs", before.macs, after.macs), ("params", before.params, after.params),
                           ("bytes", bytes_before, bytes_after)):
        table.add_row(name, f"{old:,}", f"{new:,}", f"{new / old:.3f}" if old else "-")
    return table
