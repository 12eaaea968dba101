"""Reports on the mentoring side: the requests and how they ended, the people served, where
cases wait, and the requests, mentors and ratings by topic, region and party.
"""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Subquery, and_, distinct, func, literal, or_, select
from sqlalchemy import case as when

from lifecycle.reports.disclosure import Cell, Table, across, down, protect, statistic
from lifecycle.reports.queries import (
    count_where,
    event_flags,
    half_years,
    listed_people,
    medians_in_days,
    met_relations,
    period_rows,
    seconds_between,
    state_stays,
    terminal_states,
)
from lifecycle.store.models import (
    APPLICATION,
    MENTORING,
    TOPICS,
    AuditEvent,
    Case,
    Feedback,
    MentorProfile,
    Person,
    Relation,
    UTCDateTime,
)
from lifecycle.workflows.engine import Tx

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


def _accepted() -> Subquery:
    return event_flags(
        MENTORING,
        first_meeting=AuditEvent.to_state == "first_meeting",
        agreement=AuditEvent.to_state == "agreement",
    )


def relations(tx: Tx) -> Table:
    """The requests of each half-year: how far they got and how they ended; then all of them."""
    periods = half_years(tx)
    terminal = terminal_states(tx, MENTORING)
    columns = ("requested", "first_meeting", "agreement", *RELATION_OUTCOMES)
    grid: list[list[int]] = []
    if periods:
        p, flags = period_rows(tx, periods), _accepted()
        outcome = [
            count_where(Relation.outcome == name)
            for name in ("completed", "ended_early", "not_continued", "cancelled")
        ]
        statement = (
            select(
                p.c.idx,
                func.count(),
                func.sum(flags.c.first_meeting),
                func.sum(flags.c.agreement),
                *outcome,
                count_where(Case.state == "declined"),
                count_where(Case.state == "expired"),
                count_where(Case.state.not_in(terminal)),
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
        p, service = period_rows(tx, periods), met_relations(tx)
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
        stays = state_stays(workflow)
        # One pass over the stays: those that ended, and those still going on (until now).
        going_on = when((stays.c.left.is_(None), 1), else_=0)
        until = func.coalesce(stays.c.left, now)
        medians = medians_in_days(
            tx,
            select(stays.c.state, going_on, seconds_between(tx, stays.c.entered, until)).where(
                stays.c.state.not_in(terminal_states(tx, workflow))
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
    service = met_relations(tx)
    first = select(seconds_between(tx, service.c.requested_at, service.c.met))
    met, met_days = medians_in_days(tx, first).get((), (0, None))
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
            count_where(Relation.outcome == "completed"),
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
            select(MentorProfile.topics).where(MentorProfile.person_id.in_(listed_people()))
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
            count_where(Relation.outcome == "completed"),
        )
        .join(Relation, Relation.mentee_id == Person.id)
        .join(flags, flags.c.case_id == Relation.case_id)
        .group_by(Person.region)
    )
    listed = (
        select(Person.region, func.count())
        .where(Person.id.in_(listed_people()))
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
