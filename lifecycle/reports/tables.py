"""Reports for the association: how many mentors, how many people served, where cases get stuck.

The one list of the reports by name, which the CLI and the console offer, and the headline
figures. Every figure is a count, a median or a mean that SQL computes from the audit trail,
the cases, the meetings' dates and the feedback ratings — never from a question, an
agreement, a note or a comment (SPEC §6). Each report is a Table whose small groups
lifecycle.reports.disclosure hides (`[reports] min_group_size`). The reports themselves are
in `mentors` (the application side) and `relations` (the mentoring side).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import and_, distinct, func, or_, select

from lifecycle.reports.disclosure import Cell, Table, protect
from lifecycle.reports.mentors import mentors, rounds
from lifecycle.reports.queries import listed_people, met_relations
from lifecycle.reports.relations import durations, feedback, regions, relations, served, topics
from lifecycle.store.models import Case
from lifecycle.workflows.engine import Tx

REPORTS: dict[str, Callable[[Tx], Table]] = {
    report.__name__: report
    for report in (mentors, rounds, relations, served, durations, topics, regions, feedback)
}


def build(tx: Tx, name: str) -> Table:
    return REPORTS[name](tx)


def summary(tx: Tx) -> dict[str, Cell]:
    """The headline: listed mentors now, people served so far, cases open now."""
    service = met_relations(tx)
    open_states = [
        (name, state.name)
        for name, workflow in tx.workflows.items()
        for state in workflow.states.values()
        if not state.terminal and state.name not in ("listed", "paused")
    ]
    counts = [
        tx.session.scalar(select(func.count()).select_from(listed_people().subquery())) or 0,
        tx.session.scalar(select(func.count(distinct(service.c.mentee_id)))) or 0,
        tx.session.scalar(
            select(func.count()).where(
                or_(*(and_(Case.workflow == w, Case.state == s) for w, s in open_states))
            )
        )
        or 0,
    ]
    cells = protect([counts], [], tx.settings.report_min_group_size)[0]
    return dict(zip(("mentors_listed", "people_served", "cases_open"), cells, strict=True))
