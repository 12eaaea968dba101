"""Reports on the application side: the mentors' applications by state over time, and each
intake round's funnel.
"""

from __future__ import annotations

from sqlalchemy import and_, func, or_, select

from lifecycle.reports.disclosure import Table, across, protect
from lifecycle.reports.queries import count_where, event_flags, half_years, period_rows, state_stays
from lifecycle.store.models import APPLICATION, Application, AuditEvent, Case, IntakeRound
from lifecycle.workflows.engine import Tx

OPEN_APPLICATION = ("submitted", "eligibility", "awaiting_info", "interview")
# How the applications of a round ended so far: the parts add up to `submitted`.
ROUND_OUTCOMES = ("listed", "not_eligible", "declined", "withdrawn", "no_answer", "in_progress")


def mentors(tx: Tx) -> Table:
    """Applications in each state at the end of each half-year (the current one: now)."""
    states = tuple(tx.workflows[APPLICATION].states)
    periods = half_years(tx)
    counts: dict[tuple[int, str], int] = {}
    if periods:
        p, stays = period_rows(tx, periods), state_stays(APPLICATION)
        there = and_(stays.c.entered <= p.c.at, or_(stays.c.left.is_(None), stays.c.left > p.c.at))
        statement = (
            select(p.c.idx, stays.c.state, func.count())
            .select_from(p)
            .join(stays, there)
            .group_by(p.c.idx, stays.c.state)
        )
        counts = {(idx, state): n for idx, state, n in tx.session.execute(statement)}
    grid = [[counts.get((i, state), 0) for state in states] for i in range(len(periods))]
    cells = protect(grid, [], tx.settings.report_min_group_size)
    rows = [(period.label, *row) for period, row in zip(periods, cells, strict=True)]
    return Table("mentors", ("half_year", *states), rows)


def rounds(tx: Tx) -> Table:
    """Each intake round's funnel, and how its applications ended (rejections by reason)."""
    withdraw = AuditEvent.trigger == "withdraw"
    reached = {
        "eligible": AuditEvent.to_state == "interview",
        "interviewed": AuditEvent.trigger.in_(("approve", "decline")),
        "listed": AuditEvent.trigger == "approve",
        "not_eligible": AuditEvent.trigger == "mark_ineligible",
        "declined": AuditEvent.trigger == "decline",
        "withdrawn": and_(withdraw, AuditEvent.actor_role != "system"),
        "no_answer": and_(withdraw, AuditEvent.actor_role == "system"),  # info never came
    }
    flags = event_flags(APPLICATION, **reached)
    counted = list(reached)
    statement = (
        select(
            Application.intake_round_id,
            func.count(),
            *(func.sum(flags.c[name]) for name in counted),
            count_where(Case.state.in_(OPEN_APPLICATION)),
        )
        .join(flags, flags.c.case_id == Application.case_id)
        .join(Case, Case.id == Application.case_id)
        .group_by(Application.intake_round_id)
    )
    found = {row[0]: [int(n) for n in row[1:]] for row in tx.session.execute(statement)}
    shown = tx.session.scalars(
        select(IntakeRound)
        .where(
            or_(
                and_(IntakeRound.opens_at <= tx.now, IntakeRound.cancelled_at.is_(None)),
                IntakeRound.id.in_([key for key in found if key is not None]),
            )
        )
        .order_by(IntakeRound.opens_at)
    ).all()
    columns = ("submitted", *counted, "in_progress")
    labels: list[tuple[str, str | None]] = [
        (r.name, r.opens_at.astimezone(tx.settings.time_zone).date().isoformat()) for r in shown
    ]
    keys: list[int | None] = [r.id for r in shown]
    if None in found:  # entered by a coordinator outside any round
        labels.append(("—", None))
        keys.append(None)
    grid = [found.get(key, [0] * len(columns)) for key in keys]
    parts = [columns.index(name) for name in ROUND_OUTCOMES]
    cells = protect(grid, across(range(len(grid)), parts), tx.settings.report_min_group_size)
    rows = [(*label, *row) for label, row in zip(labels, cells, strict=True)]
    return Table("rounds", ("round", "opens", *columns), rows)
