"""Small groups in reports: counts that could point at a person are hidden.

A count of people from 1 to k - 1 shows as "<k". Where a group's total is shown (elsewhere in
the table, or in another report) and only one of its counts would be hidden, the smallest
other count is hidden too, as HIDDEN, so that subtracting from the total gives nothing away.
A zero is shown: it points at nobody. A median or a mean over fewer than k people is left out.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

Cell = int | float | str | None
Group = list[tuple[int, int]]  # (row, column) cells whose total is shown elsewhere
HIDDEN = "x"  # a count hidden only so that a small one cannot be worked out from the total


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Cell, ...]]

    def as_dicts(self) -> list[dict[str, Cell]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


# -- small groups -----------------------------------------------------------------------------


def protect(grid: Sequence[Sequence[int]], groups: Sequence[Group], k: int) -> list[list[Cell]]:
    """Counts 1..k-1 become "<k"; then, while a group has exactly one hidden count, its
    smallest shown non-zero count becomes HIDDEN too (the group's total is shown elsewhere)."""
    small = {(r, c) for r, row in enumerate(grid) for c, value in enumerate(row) if 0 < value < k}
    hidden = set(small)
    changed = True
    while changed:
        changed = False
        for group in groups:
            if sum(cell in hidden for cell in group) != 1:
                continue
            shown = [(grid[r][c], (r, c)) for r, c in group if (r, c) not in hidden and grid[r][c]]
            if shown:
                hidden.add(min(shown)[1])
                changed = True
    return [
        [
            f"<{k}" if (r, c) in small else HIDDEN if (r, c) in hidden else value
            for c, value in enumerate(row)
        ]
        for r, row in enumerate(grid)
    ]


def across(rows: Sequence[int], columns: Sequence[int]) -> list[Group]:
    """One group per row over these columns (a row's parts add up to its total)."""
    return [[(r, c) for c in columns] for r in rows]


def down(rows: Sequence[int], columns: Sequence[int]) -> list[Group]:
    """One group per column over these rows (the rows add up to a total row)."""
    return [[(r, c) for r in rows] for c in columns]


def statistic(n: int, value: float | None, k: int, digits: int = 1) -> float | None:
    """A median or a mean of n people, or None when they are fewer than k (or none)."""
    return None if value is None or n < max(k, 1) else round(value, digits)


def _text(cell: Cell) -> str:
    return "" if cell is None else str(cell)


# A spreadsheet reads a cell that begins with one of these as a formula (=HYPERLINK(...)).
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _inert(cell: Cell) -> str:
    """The cell as CSV text no spreadsheet runs: text that could start a formula gets a
    leading apostrophe, which spreadsheets show as text (OWASP's CSV-injection advice)."""
    text = _text(cell)
    return f"'{text}" if isinstance(cell, str) and text.startswith(FORMULA_START) else text


def to_csv(table: Table) -> str:
    out = io.StringIO()
    # RFC 4180's CRLF: the writer then quotes a field that holds a lone CR, which would
    # otherwise end its row.
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_inert(column) for column in table.columns])
    writer.writerows([[_inert(cell) for cell in row] for row in table.rows])
    return out.getvalue()


def to_text(table: Table) -> str:
    """The table in aligned columns, for a terminal."""
    lines = [list(table.columns), *([_text(cell) for cell in row] for row in table.rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(table.columns))]
    return "".join(
        "  ".join(value.ljust(width) for value, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in lines
    )
