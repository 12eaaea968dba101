"""Reports for the association: how many mentors, how many people served, where cases get stuck.

Every figure is a count, a median or a mean that SQL computes from the audit trail, the cases,
the meetings' dates and the feedback ratings — never from a question, an agreement, a note or
a comment (SPEC §6). Each report is a Table whose small groups lifecycle.disclosure hides
(`[reports] min_group_size`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
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
    distinct,
    extract,
    func,
    literal,
    or_,
    select,
    union_all,
)
from sqlalchemy import case as when

from lifecycle.reports.disclosure import Cell, Table, across, down, protect, statistic
from lifecycle.store.models import (
    APPLICATION,
    MENTORING,
    TOPICS,
    Application,
    AuditEvent,
    Case,
    Feedback,
    IntakeRound,
    Meeting,
    MentorProfile,
    Person,
    Relation,
    UTCDateTime,
)
from lifecycle.workflows.engine import Tx

DAY = 86400.0
OPEN_APPLICATION = ("submitted", "eligibility", "awaiting_info", "interview")
# How the applications of a round ended so far: the parts add up to `submitted`.
ROUND_OUTCOMES = ("listed", "not_eligible", "declined", "withdrawn", "no_answer", "in_progress")
# How the requests of a half-year ended so far: the parts add up to `requested`.
RELATION_OUTCOMES = (
    "completed",
    "ended_early",
    "not_continued",
    "cancelled",
    "declined",
    "expired",
    "open",
)
OTHER_REGIONS = "*"  # the regions too small to show on their own, together


@dataclass(frozen=True)
class Period:
    label: str  # "2026-H2"
    start: datetime
    end: datetime  # the next half-year's start


# -- time and the building blocks -------------------------------------------------------------


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


def _periods(tx: Tx, periods: list[Period]) -> CTE:
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


def _seconds(tx: Tx, start: Any, end: Any) -> ColumnElement[Any]:
    """Seconds from start to end, in each database's own words."""
    if tx.session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * DAY
    return extract("epoch", end - start)


def _stays(workflow: str) -> Subquery:
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


def _flags(workflow: str, **conditions: ColumnElement[bool]) -> Subquery:
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


def _accepted() -> Subquery:
    return _flags(
        MENTORING,
        first_meeting=AuditEvent.to_state == "first_meeting",
        agreement=AuditEvent.to_state == "agreement",
    )


def _service(tx: Tx) -> Subquery:
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


def _medians(tx: Tx, values: Select[Any]) -> dict[tuple[Any, ...], tuple[int, float]]:
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


def _listed_people() -> Select[Any]:
    """The people whose application is `listed`: the mentors in the directory."""
    return (
        select(Application.person_id)
        .join(Case, Case.id == Application.case_id)
        .where(Case.state == "listed")
    )


def _terminal(tx: Tx, workflow: str) -> list[str]:
    return [state.name for state in tx.workflows[workflow].states.values() if state.terminal]


def _sum(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(when((condition, 1), else_=0))


# -- the reports ------------------------------------------------------------------------------


def mentors(tx: Tx) -> Table:
    """Applications in each state at the end of each half-year (the current one: now)."""
    states = tuple(tx.workflows[APPLICATION].states)
    periods = half_years(tx)
    counts: dict[tuple[int, str], int] = {}
    if periods:
        p, stays = _periods(tx, periods), _stays(APPLICATION)
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
    flags = _flags(APPLICATION, **reached)
    counted = list(reached)
    statement = (
        select(
            Application.intake_round_id,
            func.count(),
            *(func.sum(flags.c[name]) for name in counted),
            _sum(Case.state.in_(OPEN_APPLICATION)),
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


def relations(tx: Tx) -> Table:
    """The requests of each half-year: how far they got and how they ended; then all of them."""
    periods = half_years(tx)
    terminal = _terminal(tx, MENTORING)
    columns = ("requested", "first_meeting", "agreement", *RELATION_OUTCOMES)
    grid: list[list[int]] = []
    if periods:
        p, flags = _periods(tx, periods), _accepted()
        outcome = [
            _sum(Relation.outcome == name)
            for name in ("completed", "ended_early", "not_continued", "cancelled")
        ]
        statement = (
            select(
                p.c.idx,
                func.count(),
                func.sum(flags.c.first_meeting),
                func.sum(flags.c.agreement),
                *outcome,
                _sum(Case.state == "declined"),
                _sum(Case.state == "expired"),
                _sum(Case.state.not_in(terminal)),
            )
            .select_from(p)
            .join(
                Relation,
                and_(Relation.requested_at >= p.c.since, Relation.requested_at < p.c.until),
            )
            .join(Case, Case.id == Relation.case_id)
            .join(flags, flags.c.case_id == Relation.case_id)
            .group_by(p.c.idx)
        )
        found = {row[0]: [int(n) for n in row[1:]] for row in tx.session.execute(statement)}
        grid = [found.get(i, [0] * len(columns)) for i in range(len(periods))]
    grid.append([sum(column) for column in zip(*grid, strict=True)] or [0] * len(columns))
    cohorts = range(len(grid) - 1)
    parts = [columns.index(name) for name in RELATION_OUTCOMES]
    groups = across(range(len(grid)), parts) + down(cohorts, range(len(columns)))
    cells = protect(grid, groups, tx.settings.report_min_group_size)
    names = [period.label for period in periods] + ["all"]
    return Table(
        "relations",
        ("half_year", *columns),
        [(name, *row) for name, row in zip(names, cells, strict=True)],
    )


def served(tx: Tx) -> Table:
    """People served each half-year: mentees who had met their mentor and had not closed."""
    periods = half_years(tx)
    columns = ("people_served", "new_people", "mentors_serving", "relations")
    grid: list[list[int]] = [[0] * len(columns) for _ in periods]
    if periods:
        p, service = _periods(tx, periods), _service(tx)
        during = and_(
            service.c.met < p.c.until,
            or_(service.c.ended.is_(None), service.c.ended >= p.c.since),
        )
        statement = (
            select(
                p.c.idx,
                func.count(distinct(service.c.mentee_id)),
                func.count(distinct(service.c.mentor_id)),
                func.count(),
            )
            .select_from(p)
            .join(service, during)
            .group_by(p.c.idx)
        )
        for idx, people, mentors_, count in tx.session.execute(statement):
            grid[idx][0], grid[idx][2], grid[idx][3] = people, mentors_, count
        firsts = (
            select(func.min(service.c.met).label("first")).group_by(service.c.mentee_id).subquery()
        )
        new = (
            select(p.c.idx, func.count())
            .select_from(p)
            .join(firsts, and_(firsts.c.first >= p.c.since, firsts.c.first < p.c.until))
            .group_by(p.c.idx)
        )
        for idx, count in tx.session.execute(new):
            grid[idx][1] = count
    # The new people of all half-years add up to everyone served, a figure shown on its own.
    cells = protect(grid, down(range(len(grid)), [1]), tx.settings.report_min_group_size)
    rows = [(period.label, *row) for period, row in zip(periods, cells, strict=True)]
    return Table("served", ("half_year", *columns), rows)


def durations(tx: Tx) -> Table:
    """Median days in each state (stays that ended), and the cases there now with their median
    wait so far: where cases get stuck. Last, the median days from request to first meeting."""
    k = tx.settings.report_min_group_size
    now = literal(tx.now, UTCDateTime())
    rows: list[tuple[Cell, ...]] = []
    for workflow in (APPLICATION, MENTORING):
        stays = _stays(workflow)
        # One pass over the stays: those that ended, and those still going on (until now).
        going_on = when((stays.c.left.is_(None), 1), else_=0)
        until = func.coalesce(stays.c.left, now)
        medians = _medians(
            tx,
            select(stays.c.state, going_on, _seconds(tx, stays.c.entered, until)).where(
                stays.c.state.not_in(_terminal(tx, workflow))
            ),
        )
        for state in tx.workflows[workflow].states.values():
            if state.terminal:
                continue
            done, done_days = medians.get((state.name, 0), (0, None))
            there, there_days = medians.get((state.name, 1), (0, None))
            stays_n, now_n = protect([[done, there]], [], k)[0]
            rows.append(
                (
                    workflow,
                    state.name,
                    stays_n,
                    statistic(done, done_days, k),
                    now_n,
                    statistic(there, there_days, k),
                )
            )
    service = _service(tx)
    first = select(_seconds(tx, service.c.requested_at, service.c.met))
    met, met_days = _medians(tx, first).get((), (0, None))
    met_n = protect([[met]], [], k)[0][0]
    rows.append((MENTORING, "first_meeting_after", met_n, statistic(met, met_days, k), None, None))
    columns = ("workflow", "state", "stays", "median_days", "now", "median_days_now")
    return Table("durations", columns, rows)


def topics(tx: Tx) -> Table:
    """Per topic: listed mentors who hold it, and the requests on it and how far they got."""
    flags = _accepted()
    statement = (
        select(
            Relation.topic,
            func.count(),
            func.sum(flags.c.first_meeting),
            _sum(Relation.outcome == "completed"),
        )
        .join(flags, flags.c.case_id == Relation.case_id)
        .group_by(Relation.topic)
    )
    found = {row[0]: [int(n) for n in row[1:]] for row in tx.session.execute(statement)}
    # A profile's topics are a JSON list; the listed mentors are a few hundred at most, so
    # their lists are counted here rather than unnested in two SQL dialects.
    held = Counter(
        topic
        for chosen in tx.session.scalars(
            select(MentorProfile.topics).where(MentorProfile.person_id.in_(_listed_people()))
        )
        for topic in chosen
    )
    grid = [[held[topic], *found.get(topic, [0, 0, 0])] for topic in TOPICS]
    # A mentor holds several topics; each request has one, so those columns add up to all.
    cells = protect(grid, down(range(len(grid)), [1, 2, 3]), tx.settings.report_min_group_size)
    rows = [(topic, *row) for topic, row in zip(TOPICS, cells, strict=True)]
    return Table("topics", ("topic", "mentors", "requested", "first_meeting", "completed"), rows)


def regions(tx: Tx) -> Table:
    """Per region: listed mentors (where they work) and the mentees' requests and how far they
    got (where the mentees work). Regions with no count of k or more are shown together."""
    k = tx.settings.report_min_group_size
    flags = _accepted()
    asked = (
        select(
            Person.region,
            func.count(),
            func.sum(flags.c.first_meeting),
            _sum(Relation.outcome == "completed"),
        )
        .join(Relation, Relation.mentee_id == Person.id)
        .join(flags, flags.c.case_id == Relation.case_id)
        .group_by(Person.region)
    )
    listed = (
        select(Person.region, func.count())
        .where(Person.id.in_(_listed_people()))
        .group_by(Person.region)
    )
    counts: dict[str, list[int]] = {}
    for region, *numbers in tx.session.execute(asked):
        counts.setdefault(region, [0, 0, 0, 0])[1:] = [int(n) for n in numbers]
    for region, number in tx.session.execute(listed):
        counts.setdefault(region, [0, 0, 0, 0])[0] = number
    merged: dict[str, list[int]] = {}
    for region in sorted(counts):
        name = region if max(counts[region]) >= k else OTHER_REGIONS
        merged[name] = [
            a + b for a, b in zip(merged.get(name, [0, 0, 0, 0]), counts[region], strict=True)
        ]
    names = sorted(merged, key=lambda name: (name == OTHER_REGIONS, name))
    grid = [merged[name] for name in names]
    cells = protect(grid, down(range(len(grid)), range(4)), k)
    rows = [(name, *row) for name, row in zip(names, cells, strict=True)]
    return Table("regions", ("region", "mentors", "requested", "first_meeting", "completed"), rows)


def feedback(tx: Tx) -> Table:
    """The ratings (1-5) the parties gave after closing: all, by party, by topic."""
    k = tx.settings.report_min_group_size
    party = when((Feedback.person_id == Relation.mentee_id, "mentee"), else_="mentor")
    statement = (
        select(party, Relation.topic, Feedback.rating, func.count())
        .join(Relation, Relation.id == Feedback.relation_id)
        .group_by(party, Relation.topic, Feedback.rating)
    )
    groups = ("all", "mentee", "mentor", *TOPICS)
    spread = {group: [0] * 5 for group in groups}
    for who, topic, rating, count in tx.session.execute(statement):
        for group in ("all", who, topic):
            spread[group][rating - 1] += count
    grid = [[sum(spread[group]), *spread[group]] for group in groups]
    parties, by_topic = [1, 2], list(range(3, len(groups)))
    checks = (
        across(range(len(groups)), range(1, 6)) + down(parties, range(6)) + down(by_topic, range(6))
    )
    cells = protect(grid, checks, k)
    rows = []
    for group, counts, row in zip(groups, grid, cells, strict=True):
        n = counts[0]
        mean = sum(rating * count for rating, count in enumerate(counts[1:], 1)) / n if n else None
        rows.append((group, row[0], statistic(n, mean, k, digits=2), *row[1:]))
    return Table("feedback", ("group", "ratings", "mean", "r1", "r2", "r3", "r4", "r5"), rows)


REPORTS: dict[str, Callable[[Tx], Table]] = {
    report.__name__: report
    for report in (mentors, rounds, relations, served, durations, topics, regions, feedback)
}


def build(tx: Tx, name: str) -> Table:
    return REPORTS[name](tx)


def summary(tx: Tx) -> dict[str, Cell]:
    """The headline: listed mentors now, people served so far, cases open now."""
    service = _service(tx)
    open_states = [
        (name, state.name)
        for name, workflow in tx.workflows.items()
        for state in workflow.states.values()
        if not state.terminal and state.name not in ("listed", "paused")
    ]
    counts = [
        tx.session.scalar(select(func.count()).select_from(_listed_people().subquery())) or 0,
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
