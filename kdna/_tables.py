"""Markdown tables, written one way: every table kdna prints or commits goes through here.

Reports, plans, fine-tuning comparisons and speed measurements all print as Markdown (and
render as tables in Jupyter); writing the pipes, the rule and the alignment in one function
keeps their format the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_row", "markdown_table"]


def markdown_row(cells: Sequence[object]) -> str:
    """``| a | b |``; an empty cell is written as nothing between its pipes (``||``), so a
    row that leaves its last columns empty ends in a run of pipes."""
    return "|" + "".join(f" {cell} |" if cell != "" else "|" for cell in cells)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]],
                   align: str | None = None) -> str:
    """A Markdown table: ``header``, the rule, then one line per row of ``rows`` (cells
    written with ``str``). ``align`` has one letter per column, ``"l"`` (``---``) or ``"r"``
    (``---:``); by default every column is left-aligned."""
    align = align or "l" * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align must give 'l' or 'r' for each of the {len(header)} columns, "
                         f"got {align!r}")
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align)
    return "\n".join([markdown_row(header), rule, *(markdown_row(row) for row in rows)])
