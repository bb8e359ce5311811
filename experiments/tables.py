"""Fixed-width and markdown tables of the scripts' results (re-exported by experiments/common.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["Column", "format_table"]


@dataclass(frozen=True)
class Column:
    """A table column: its title, the least width, alignment ("<" or ">"), the format spec of its values
    (None prints as "-") and the spaces before it."""
    title: str
    width: int = 0
    align: str = ">"
    spec: str = ""
    gap: int = 1


def format_table(columns: Sequence[Column], rows: Iterable[Sequence], *, markdown: bool = False) -> str:
    """Rows under a header: fixed-width text with a rule under the header, or a markdown table.

    A column is as wide as the widest of its least width, its title and its cells.
    """
    cells = [["-" if v is None else format(v, c.spec) for v, c in zip(row, columns)] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(c.title for c in columns) + " |",
                 "|" + "|".join("---:" if c.align == ">" else "---" for c in columns) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])
    widths = [max([c.width, len(c.title)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]

    def line(values):
        return "".join((" " * c.gap if i else "") + f"{v:{c.align}{w}}"
                       for i, (v, c, w) in enumerate(zip(values, columns, widths))).rstrip()

    head = line([c.title for c in columns])
    return "\n".join([head, "-" * len(head)] + [line(row) for row in cells])
