"""The charts of the reports page: SVG drawn on the server, like the workflow diagram.

No JavaScript and no outside service. A count hidden as too small ("<5") draws no bar; its
text says what the table says. Each chart has a title for screen readers, and the table
beside it holds the same numbers.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from html import escape

from lifecycle.reports.disclosure import Cell, Table

COLOURS = ("#2f6f5e", "#c9822b", "#5b7fa6", "#a3261b", "#7a6a9a", "#8c8c8c")
CHAR_W = 7.0  # an average character at the 12 px font size
BAR_H, GAP, PAD, WIDTH = 22, 6, 10, 640
HEAD = 28  # the title written at the top


def _number(cell: Cell) -> float:
    """The length to draw: a hidden or missing value draws nothing."""
    return float(cell) if isinstance(cell, int | float) else 0.0


def _text(cell: Cell) -> str:
    return "—" if cell is None else str(cell)


def _open(width: float, height: float, title: str) -> str:
    """The chart's start: its title for screen readers, and written at the top."""
    return (
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} '
        f'{height + HEAD:.0f}" role="img">'
        f"<title>{escape(title)}</title>"
        f'<text x="{PAD}" y="{HEAD - 8}" font-size="14" font-weight="bold" fill="#1d2b28">'
        f'{escape(title)}</text><g transform="translate(0 {HEAD})">'
    )


def _close(parts: list[str]) -> str:
    return "".join([*parts, "</g></svg>"])


def bars(items: Sequence[tuple[str, Cell, str]], *, title: str) -> str:
    """One horizontal bar per (label, value, text beside it): a funnel or a ranking."""
    label_w = max([len(label) for label, _, _ in items] + [4]) * CHAR_W + PAD
    most = max([_number(value) for _, value, _ in items] + [1.0])
    room = WIDTH - label_w - 2 * PAD - 90
    parts = [_open(WIDTH, 2 * PAD + len(items) * (BAR_H + GAP), title)]
    for row, (label, value, text) in enumerate(items):
        y = PAD + row * (BAR_H + GAP)
        length = room * _number(value) / most
        parts.append(
            f'<text x="{label_w:.0f}" y="{y + 15}" text-anchor="end" font-size="12" '
            f'fill="#1d2b28">{escape(label)}</text>'
            f'<rect x="{label_w + PAD:.0f}" y="{y}" width="{length:.1f}" height="{BAR_H}" '
            f'fill="{COLOURS[0]}"/>'
            f'<text x="{label_w + 2 * PAD + length:.1f}" y="{y + 15}" font-size="12" '
            f'fill="#1d2b28">{escape(text)}</text>'
        )
    return _close(parts)


def columns(
    categories: Sequence[str], series: Sequence[tuple[str, Sequence[Cell]]], *, title: str
) -> str:
    """Stacked columns, one per category (a half-year), a colour per series, with a legend."""
    top, bottom, legend_h = PAD + 16, 36, 20 * len(series)  # top: the totals above
    plot_h = 180
    totals = [sum(_number(values[i]) for _, values in series) for i in range(len(categories))]
    most = max([*totals, 1.0])
    step = (WIDTH - 2 * PAD) / max(len(categories), 1)
    parts = [_open(WIDTH, top + plot_h + bottom + legend_h, title)]
    for i, category in enumerate(categories):
        x, base = PAD + i * step + step * 0.2, float(top + plot_h)
        for colour, (_, values) in zip(COLOURS, series, strict=False):
            height = plot_h * _number(values[i]) / most
            base -= height
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{step * 0.6:.1f}" '
                f'height="{height:.1f}" fill="{colour}"/>'
            )
        shown = " / ".join(_text(values[i]) for _, values in series)
        parts.append(
            f'<text x="{x + step * 0.3:.1f}" y="{base - 4:.1f}" text-anchor="middle" '
            f'font-size="12" fill="#1d2b28">{escape(shown)}</text>'
            f'<text x="{x + step * 0.3:.1f}" y="{top + plot_h + 18}" text-anchor="middle" '
            f'font-size="12" fill="#1d2b28">{escape(category)}</text>'
        )
    for row, (colour, (name, _)) in enumerate(zip(COLOURS, series, strict=False)):
        y = top + plot_h + bottom + row * 20
        parts.append(
            f'<rect x="{PAD}" y="{y}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{PAD + 18}" y="{y + 11}" font-size="12" fill="#1d2b28">'
            f"{escape(name)}</text>"
        )
    return _close(parts)


def report_charts(
    tables: Mapping[str, Table], labels: Mapping[str, str], *, waiting: Collection[str]
) -> dict[str, list[str]]:
    """The charts of each report on the page, drawn from its table; `waiting` are the states
    in which a case waits for someone to act (where it can get stuck)."""

    def heading(table: str, key: str) -> str:
        """A column's words: the report's own ("<report>_<column>") before the common ones."""
        return labels.get(f"{table}_{key}") or labels.get(key, key)

    def rows(table: str) -> list[dict[str, Cell]]:
        return tables[table].as_dicts()

    def funnel(table: str, row: Mapping[str, Cell], keys: Sequence[str], title: str) -> str:
        return bars([(heading(table, key), row[key], _text(row[key])) for key in keys], title=title)

    def over_time(table: str, keys: Sequence[str]) -> str:
        return columns(
            [str(row["half_year"]) for row in rows(table)],
            [(heading(table, key), [row[key] for row in rows(table)]) for key in keys],
            title=labels[f"{table}_title"],
        )

    days = labels["days_short"]
    stuck = [
        (
            heading("durations", str(row["state"])),
            row["now"],
            f"{_text(row['now'])} · {_text(row['median_days_now'])} {days}",
        )
        for row in rows("durations")
        if row["state"] in waiting
    ]
    requested = [
        (heading("topics", str(row["topic"])), row["requested"], _text(row["requested"]))
        for row in rows("topics")
    ]
    relations = ("requested", "first_meeting", "agreement", "completed", "declined", "expired")
    return {
        "mentors": [over_time("mentors", ("listed", "paused"))],
        "rounds": [
            funnel(
                "rounds", row, ("submitted", "eligible", "interviewed", "listed"), str(row["round"])
            )
            for row in rows("rounds")
        ],
        "relations": [
            funnel("relations", rows("relations")[-1], relations, labels["relations_title"])
        ],
        "served": [over_time("served", ("people_served",))],
        "durations": [bars(stuck, title=labels["durations_chart"])],
        "topics": [bars(requested, title=labels["topics_title"])],
        "feedback": [
            funnel(
                "feedback",
                rows("feedback")[0],
                ("r1", "r2", "r3", "r4", "r5"),
                labels["feedback_title"],
            )
        ],
    }
