"""Read-side views of cases for the CLI (and later the console): no confidential content."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import cache
from itertools import pairwise
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy import case as when
from sqlalchemy.orm import defer, selectinload

from lifecycle.store.models import (
    APPLICATION,
    CASE_PREFIX,
    MENTORING,
    Application,
    AuditEvent,
    Case,
    MentorProfile,
    OutboxMessage,
    Relation,
    Timer,
)
from lifecycle.workflows.engine import Tx, load_case
from lifecycle.workflows.qualifications import evaluate
from lifecycle.workflows.spec import StateSpec


def _iso(moment: datetime | None, tx: Tx) -> str | None:
    return (
        moment.astimezone(tx.settings.time_zone).isoformat(timespec="minutes") if moment else None
    )


def _people(subject: Application | Relation) -> dict[str, Any]:
    if isinstance(subject, Application):
        return {"applicant": subject.person.name}
    return {"mentor": subject.mentor.name, "mentee": subject.mentee.name, "topic": subject.topic}


def list_cases(
    tx: Tx, *, workflow: str | None = None, state: str | None = None
) -> list[dict[str, Any]]:
    """Cases, oldest state entry first, with who is involved (never the question)."""
    query = select(Case).order_by(Case.state_entered_at, Case.id)
    if workflow:
        query = query.where(Case.workflow == workflow)
    if state:
        query = query.where(Case.state == state)
    cases = tx.session.scalars(query).all()
    ids = [case.id for case in cases]
    subjects: dict[int, Application | Relation] = {}
    # The people come in one query each, not one per case.
    applications = select(Application).options(selectinload(Application.person))
    for application in tx.session.scalars(applications.where(Application.case_id.in_(ids))):
        subjects[application.case_id] = application
    relations = select(Relation).options(
        selectinload(Relation.mentor), selectinload(Relation.mentee)
    )
    for relation in tx.session.scalars(relations.where(Relation.case_id.in_(ids))):
        subjects[relation.case_id] = relation
    lang = tx.settings.language
    return [
        {
            "id": case.ref,
            "workflow": case.workflow,
            "state": case.state,
            "state_label": tx.workflows[case.workflow].state(case.state).label[lang],
            "since": _iso(case.state_entered_at, tx),
            "version": case.version,
            **_people(subjects[case.id]),
        }
        for case in cases
    ]


def show_case(tx: Tx, ref: str, *, role: str = "coordinator") -> dict[str, Any]:
    """One case: state, the steps `role` may take now, qualification rules, timeline."""
    case, subject = load_case(tx, ref)
    workflow = tx.workflows[case.workflow]
    lang = tx.settings.language
    state = workflow.state(case.state)
    detail: dict[str, Any] = {
        "id": case.ref,
        "workflow": case.workflow,
        "state": case.state,
        "state_label": state.label[lang],
        "action": state.action[lang] if state.action else None,
        "version": case.version,
        "opened": _iso(case.opened_at, tx),
        "since": _iso(case.state_entered_at, tx),
        **_people(subject),
        "next_steps": [
            {
                "trigger": spec.trigger,
                "label": spec.label[lang],
                "fields": [
                    {
                        "name": f.name,
                        "type": f.type,
                        "required": f.required,
                        **({"choices": list(f.choices)} if f.choices else {}),
                    }
                    for f in spec.fields
                ],
            }
            for spec in workflow.triggers_for(case.state, frozenset({role}))
        ],
    }
    if case.workflow == APPLICATION:
        assert isinstance(subject, Application)
        detail["qualifications"] = _qualifications(tx, subject)
    else:
        assert isinstance(subject, Relation)
        detail["outcome"] = subject.outcome
    detail["timeline"] = _timeline(tx, case)
    return detail


def _qualifications(tx: Tx, application: Application) -> list[dict[str, Any]]:
    profile = tx.session.scalar(
        select(MentorProfile).where(MentorProfile.person_id == application.person_id)
    )
    if profile is None:
        return []
    today = tx.now.astimezone(tx.settings.time_zone).date()
    verified = {item.kind: item.verified_at is not None for item in application.evidence}
    return [
        {
            "rule": r.rule,
            "passed": r.passed,
            "required": r.required,
            "explanation": r.explanation,
            "verified": verified.get(r.rule),
        }
        for r in evaluate(profile, today=today)
    ]


def _timeline(tx: Tx, case: Case) -> list[dict[str, Any]]:
    # The parties' own words are not even read here (SPEC §6a): touching them would raise.
    events = tx.session.scalars(
        select(AuditEvent)
        .options(defer(AuditEvent.party_text, raiseload=True))
        .where(AuditEvent.case_id == case.id)
        .order_by(AuditEvent.id)
    ).all()
    timers = tx.session.scalars(
        select(Timer).where(Timer.case_id == case.id).order_by(Timer.due_at)
    ).all()
    messages = tx.session.scalars(
        select(OutboxMessage).where(OutboxMessage.case_id == case.id).order_by(OutboxMessage.id)
    ).all()
    # Each step with the name its actor had then, and never the parties' own words (party_text).
    entries: list[dict[str, Any]] = [
        {
            "at": _iso(event.at, tx),
            "kind": "step",
            "trigger": event.trigger,
            "from": event.from_state,
            "to": event.to_state,
            "actor": event.actor_name if event.actor_id else "system",
            "role": event.actor_role,
            "comment": event.comment,
            "detail": event.detail,
        }
        for event in events
    ]
    entries += [
        {
            "at": _iso(timer.due_at, tx),
            "kind": "timer",
            "name": timer.name,
            "state": timer.state,
            "status": timer.status,
        }
        for timer in timers
    ]
    entries += [
        {
            "at": _iso(message.created_at, tx),
            "kind": "email",
            "template": message.template,
            "to": message.to_name,
            "status": message.status,
        }
        for message in messages
    ]
    return sorted(entries, key=lambda entry: entry["at"] or "")


def list_outbox(tx: Tx, *, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Outbox messages, failed first, then newest: what a coordinator must look at."""
    query = (
        select(OutboxMessage)
        .order_by((OutboxMessage.status != "failed"), OutboxMessage.id.desc())
        .limit(limit)
    )
    if status:
        query = query.where(OutboxMessage.status == status)
    case_refs = {}
    messages = tx.session.scalars(query).all()
    case_ids = {m.case_id for m in messages if m.case_id}
    for case in tx.session.scalars(select(Case).where(Case.id.in_(case_ids))):
        case_refs[case.id] = case.ref
    return [
        {
            "id": m.id,
            "status": m.status,
            "template": m.template,
            "to": m.to_email,
            "case": case_refs.get(m.case_id or 0),
            "attempts": m.attempts,
            "queued": _iso(m.created_at, tx),
            "next_attempt": _iso(m.next_attempt_at, tx) if m.status == "pending" else None,
            "last_error": m.last_error,
        }
        for m in messages
    ]


Pair = tuple[str, str]  # (workflow, state)


def work_queue(tx: Tx, *, language: str) -> list[dict[str, Any]]:
    """Cases that wait for a coordinator or are overdue, overdue first, then oldest first."""
    waiting = _states(tx, lambda state: state.waits_for == "coordinator")
    # Only a state that declares an overdue timer can have one fired in its current entry:
    # the timers of the cases in those states are read, not the fired timers of every case.
    may_be_overdue = _states(tx, lambda state: any(timer.overdue for timer in state.timers))
    actions = {
        (workflow, state): tx.workflows[workflow].state(state).action
        for workflow, state in waiting | may_be_overdue
    }
    statement = _queue_statement(
        frozenset(waiting), frozenset(may_be_overdue), frozenset(_overdue_timer_names(tx))
    )
    items = []
    # Plain rows, through the session's connection: a few hundred, and no ORM objects in them.
    for case_id, workflow, state, since, overdue in tx.session.connection().execute(statement):
        if overdue is None and (workflow, state) not in waiting:
            continue
        action = actions[workflow, state]
        items.append(
            {
                "id": f"{CASE_PREFIX[workflow]}-{case_id}",
                "state": state,
                "action": action[language] if action else "",
                "since": since,
                "overdue_since": overdue,
            }
        )
    items.sort(
        key=lambda item: (
            item["overdue_since"] is None,
            item["overdue_since"] or item["since"],
            item["since"],
        )
    )
    return items


@cache
def _queue_statement(
    waiting: frozenset[Pair], may_be_overdue: frozenset[Pair], overdue_timers: frozenset[str]
) -> Select[int, str, str, datetime, datetime | None]:
    """The cases in these states, each with its first fired overdue timer of this state entry."""
    overdue_since = (
        select(func.min(Timer.due_at))
        .where(
            Timer.case_id == Case.id,
            Timer.entry_event_id == Case.entry_event_id,
            Timer.status == "fired",
            Timer.name.in_(sorted(overdue_timers)),
        )
        .scalar_subquery()
    )
    # The timers are read only for the cases in a state that declares an overdue timer.
    overdue = when((_in_states(may_be_overdue), overdue_since), else_=None)
    return select(Case.id, Case.workflow, Case.state, Case.state_entered_at, overdue).where(
        _in_states(waiting | may_be_overdue)
    )


def _in_states(states: frozenset[Pair]) -> ColumnElement[bool]:
    """The case is in one of these states: a range of the (workflow, state) index each."""
    by_workflow: dict[str, list[str]] = {}
    for workflow, state in sorted(states):
        by_workflow.setdefault(workflow, []).append(state)
    return or_(
        *[and_(Case.workflow == w, Case.state.in_(names)) for w, names in by_workflow.items()]
    )


def _states(tx: Tx, keep: Callable[[StateSpec], bool]) -> set[Pair]:
    """(workflow, state) of every state of every workflow that `keep` keeps."""
    return {
        (name, state.name)
        for name, workflow in tx.workflows.items()
        for state in workflow.states.values()
        if keep(state)
    }


def _overdue_timer_names(tx: Tx) -> set[str]:
    return {
        timer.name
        for workflow in tx.workflows.values()
        for state in workflow.states.values()
        for timer in state.timers
        if timer.overdue
    }


def state_counts(tx: Tx) -> list[dict[str, Any]]:
    """How many cases each state of each workflow holds, in the workflow's order."""
    pairs = tuple(
        (name, state) for name, workflow in tx.workflows.items() for state in workflow.states
    )
    counts = _counts(tx, pairs)
    lang = tx.settings.language
    return [
        {
            "workflow": name,
            "state": state,
            "label": spec.label[lang],
            "count": counts.get((name, state), 0),
        }
        for name, workflow in tx.workflows.items()
        for state, spec in workflow.states.items()
    ]


# The state most cases of a workflow are in after a few years, and the table that holds one
# row for each case of that workflow (see _counts).
MOST_CASES = {MENTORING: ("closed", Relation), APPLICATION: ("listed", Application)}


def _counts(tx: Tx, pairs: tuple[Pair, ...]) -> dict[Pair, int]:
    """How many cases each (workflow, state) holds.

    SQLite counts a range of an index entry by entry, but a whole table from its pages. So
    it counts each state over its range of the (workflow, state) index, except the state
    most cases are in (MOST_CASES): those are what remains of all the workflow's cases (one
    per application, or per relation) once the cases in its other states, and in none of its
    known states, are taken away.
    """
    if tx.session.get_bind().dialect.name != "sqlite":
        rows = tx.session.execute(
            select(Case.workflow, Case.state, func.count()).group_by(Case.workflow, Case.state)
        )
        return {(workflow, state): count for workflow, state, count in rows}
    derived = tuple((w, state) for w, (state, _) in MOST_CASES.items() if (w, state) in pairs)
    keys, statement = _sqlite_counts(pairs, derived)
    found = dict(zip(keys, tx.session.execute(statement).one(), strict=True))
    counts = {pair: found[pair] for pair in pairs if pair not in derived}
    for workflow, state in derived:
        others = sum(n for (name, _), n in counts.items() if name == workflow)
        counts[workflow, state] = found[workflow, "*"] - found[workflow, "?"] - others
    return counts


@cache
def _sqlite_counts(
    pairs: tuple[Pair, ...], derived: tuple[Pair, ...]
) -> tuple[list[Pair], Select[Any]]:
    """What to count, keyed: each pair but the derived ones; and for the workflow of each
    derived pair, all its cases (`*`) and those in none of its known states (`?`)."""

    def count(*where: ColumnElement[bool]) -> Any:
        return select(func.count()).select_from(Case).where(*where).scalar_subquery()

    counted: dict[Pair, Any] = {
        (workflow, state): count(Case.workflow == workflow, Case.state == state)
        for workflow, state in pairs
        if (workflow, state) not in derived
    }
    for workflow, _ in derived:
        table = MOST_CASES[workflow][1]
        counted[workflow, "*"] = select(func.count()).select_from(table).scalar_subquery()
        known = sorted(state for name, state in pairs if name == workflow)
        mine = Case.workflow == workflow
        gaps = [[mine, Case.state < known[0]], [mine, Case.state > known[-1]]]
        gaps += [[mine, Case.state > low, Case.state < high] for low, high in pairwise(known)]
        counted[workflow, "?"] = sum((count(*gap) for gap in gaps[1:]), count(*gaps[0]))
    return list(counted), select(*counted.values())
