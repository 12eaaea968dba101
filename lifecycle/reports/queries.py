"""What the reports are computed from: the half-years, each stay of a case in a state, the
steps a case took, the relations that have met, the listed mentors, and medians in SQL.

They read states, the audit trail's steps and times and the meetings' dates: never a
question, an agreement, a note or a comment (SPEC §6).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CTE,
    ColumnElement,
    Integer,
    Select,
    Subquery,
    and_,
    extract,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy import case as when

from lifecycle.store.models import (
    Application,
    AuditEvent,
    Case,
    Meeting,
    Relation,
    UTCDateTime,
)
from lifecycle.workflows.engine import Tx

DAY = 86400.0


@dataclass(frozen=True)
class Period:
    label: str  # "2026-H2"
    start: datetime
    end: datetime  # the next half-year's start


def half_years(tx: Tx) -> list[Period]:
    """The half-years, in local time, from the first case to now."""
    first = tx.session.scalar(select(func.min(Case.opened_at)))
    if first is None:
        return []
    zone = tx.settings.time_zone
    local = first.astimezone(zone)
    year, half = local.year, (local.month - 1) // 6
    periods = []
    while (start := datetime(year, 1 + 6 * half, 1, tzinfo=zone)) <= tx.now:
        label = f"{year}-H{half + 1}"
        year, half = (year, 1) if half == 0 else (year + 1, 0)
        end = datetime(year, 1 + 6 * half, 1, tzinfo=zone)
        periods.append(Period(label, start.astimezone(UTC), end.astimezone(UTC)))
    return periods


def period_rows(tx: Tx, periods: list[Period]) -> CTE:
    """The periods as rows: idx, since, until, and `at` — its end, or now if that is earlier."""
    return union_all(
        *(
            select(
                literal(index, Integer).label("idx"),
                literal(period.start, UTCDateTime()).label("since"),
                literal(period.end, UTCDateTime()).label("until"),
                literal(min(period.end, tx.now), UTCDateTime()).label("at"),
            )
            for index, period in enumerate(periods)
        )
    ).cte("periods")


def seconds_between(tx: Tx, start: Any, end: Any) -> ColumnElement[Any]:
    """Seconds from start to end, in each database's own words."""
    if tx.session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * DAY
    return extract("epoch", end - start)


def state_stays(workflow: str) -> Subquery:
    """Each stay of a case in a state: entered, and left (None while it is still there)."""
    moved = or_(AuditEvent.from_state.is_(None), AuditEvent.from_state != AuditEvent.to_state)
    entries = (
        select(AuditEvent.id, AuditEvent.case_id, AuditEvent.to_state, AuditEvent.at)
        .join(Case, Case.id == AuditEvent.case_id)
        .where(Case.workflow == workflow, moved)
        .subquery()
    )
    left = func.lead(entries.c.at, type_=UTCDateTime()).over(
        partition_by=entries.c.case_id, order_by=entries.c.id
    )
    return select(
        entries.c.case_id,
        entries.c.to_state.label("state"),
        entries.c.at.label("entered"),
        left.label("left"),
    ).subquery("stays")


def event_flags(workflow: str, **conditions: ColumnElement[bool]) -> Subquery:
    """Per case of the workflow: 1 in each column whose condition one of its events meets."""
    return (
        select(
            AuditEvent.case_id,
            *(func.max(when((cond, 1), else_=0)).label(name) for name, cond in conditions.items()),
        )
        .join(Case, Case.id == AuditEvent.case_id)
        .where(Case.workflow == workflow)
        .group_by(AuditEvent.case_id)
        .subquery("flags")
    )


def met_relations(tx: Tx) -> Subquery:
    """The relations that have met: mentee, mentor, the first meeting held, and when closed."""
    met = (
        select(Meeting.relation_id, func.min(Meeting.starts_at).label("met"))
        .where(Meeting.cancelled_at.is_(None), Meeting.starts_at <= tx.now)
        .group_by(Meeting.relation_id)
        .subquery()
    )
    closed = (
        select(AuditEvent.case_id, func.min(AuditEvent.at).label("ended"))
        .where(AuditEvent.to_state == "closed")
        .group_by(AuditEvent.case_id)
        .subquery()
    )
    return (
        select(
            Relation.id,
            Relation.mentee_id,
            Relation.mentor_id,
            Relation.requested_at,
            met.c.met,
            closed.c.ended,
        )
        .join(met, met.c.relation_id == Relation.id)
        .outerjoin(closed, closed.c.case_id == Relation.case_id)
        .subquery("service")
    )


def medians_in_days(tx: Tx, values: Select[Any]) -> dict[tuple[Any, ...], tuple[int, float]]:
    """Per group: how many values and their median in days; `values` selects the group's
    columns, then a number of seconds."""
    source = values.subquery()
    *keys, seconds = source.c
    ranked = select(
        *keys,
        seconds.label("seconds"),
        func.row_number().over(partition_by=keys or None, order_by=seconds).label("rn"),
        func.count().over(partition_by=keys or None).label("n"),
    ).subquery()
    groups = list(ranked.c)[: len(keys)]
    middle = and_(ranked.c.rn >= (ranked.c.n + 1) // 2, ranked.c.rn <= (ranked.c.n + 2) // 2)
    statement = select(*groups, func.max(ranked.c.n), func.avg(ranked.c.seconds)).where(middle)
    rows = tx.session.execute(statement.group_by(*groups))
    # Without keys, no values still give one row, of NULLs.
    return {tuple(row[:-2]): (int(row[-2]), float(row[-1]) / DAY) for row in rows if row[-2]}


def listed_people() -> Select[Any]:
    """The people whose application is `listed`: the mentors in the directory."""
    return (
        select(Application.person_id)
        .join(Case, Case.id == Application.case_id)
        .where(Case.state == "listed")
    )


def terminal_states(tx: Tx, workflow: str) -> list[str]:
    return [state.name for state in tx.workflows[workflow].states.values() if state.terminal]


def count_where(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(when((condition, 1), else_=0))
