"""An SVG of a workflow drawn from its file: states in columns by distance from the start."""

from __future__ import annotations

from html import escape

from lifecycle.workflows.spec import Workflow

BOX_H, GAP_X, GAP_Y, PAD = 40, 50, 24, 20
CHAR_W = 7.2  # an average character at the 13 px font size


def svg(workflow: Workflow, *, current: str, language: str) -> str:
    """The states and their transitions, the current state highlighted."""
    first = workflow.start.dest
    assert first is not None  # the loader checks the start
    depth = {first: 0}
    frontier = [first]
    while frontier:
        state = frontier.pop(0)
        for spec in workflow.transitions_from(state):
            if spec.dest and spec.dest not in depth:
                depth[spec.dest] = depth[state] + 1
                frontier.append(spec.dest)
    labels = [state.label[language] for state in workflow.states.values()]
    box_w = max(140, int(max(len(label) for label in labels) * CHAR_W) + 20)
    columns: dict[int, list[str]] = {}
    for state in workflow.states:
        columns.setdefault(depth.get(state, 0), []).append(state)
    position = {
        state: (PAD + column * (box_w + GAP_X), PAD + row * (BOX_H + GAP_Y))
        for column, states in columns.items()
        for row, state in enumerate(states)
    }
    width = PAD * 2 + len(columns) * (box_w + GAP_X) - GAP_X
    height = PAD * 2 + max(len(s) for s in columns.values()) * (BOX_H + GAP_Y) - GAP_Y
    edges = {
        (source, spec.dest) for spec in workflow.transitions if spec.dest for source in spec.sources
    }
    parts = [
        f'<svg class="diagram" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(workflow.label[language])}: {escape(current)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#888"/></marker></defs>',
    ]
    for source, dest in sorted(edges):
        (x1, y1), (x2, y2) = position[source], position[dest]
        start: tuple[float, float]
        end: tuple[float, float]
        start = (x1 + box_w, y1 + BOX_H / 2) if x2 > x1 else (x1, y1 + BOX_H / 2)
        end = (x2, y2 + BOX_H / 2) if x2 > x1 else (x2 + box_w, y2 + BOX_H / 2)
        if x2 == x1:
            start, end = (x1 + box_w / 2, y1 + BOX_H), (x2 + box_w / 2, y2)
        parts.append(
            f'<line x1="{start[0]}" y1="{start[1]}" x2="{end[0]}" y2="{end[1]}" '
            'stroke="#aaa" marker-end="url(#arrow)"/>'
        )
    for state, (x, y) in position.items():
        here = state == current
        fill, stroke = ("#2f6f5e", "#2f6f5e") if here else ("#fff", "#888")
        marker = ' aria-current="step"' if here else ""
        parts.append(
            f'<g{marker}><rect x="{x}" y="{y}" width="{box_w}" '
            f'height="{BOX_H}" rx="6" fill="{fill}" stroke="{stroke}"/>'
            f'<text x="{x + box_w / 2}" y="{y + BOX_H / 2 + 5}" text-anchor="middle" '
            f'font-size="13" fill="{"#fff" if here else "#1d2b28"}">'
            f"{escape(workflow.state(state).label[language])}</text></g>"
        )
    parts.append("</svg>")
    return "".join(parts)
