"""Plain-text tables for terminals and notebooks: one formatter for every report of the package."""
from __future__ import annotations

from typing import List, Sequence


def text_table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> List[str]:
    """Lines of a table: columns padded to fit, text left-aligned, numbers (and their headers) right-aligned."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    numeric = [all(not any(ch.isalpha() for ch in row[k]) for row in cells[1:]) for k in range(len(header))]
    lines = []
    for r, row in enumerate(cells):
        parts = [cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(row, widths, numeric)]
        lines.append("  ".join(parts).rstrip())
        if r == 0:
            lines.append("-" * len(lines[0]))
    return lines


__all__ = ["text_table"]
