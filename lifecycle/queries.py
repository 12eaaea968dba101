"""Read-side views of cases for the CLI (and later the console): no confidential content."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select

from lifecycle.engine import Tx, load_case
from lifecycle.models import (
    APPLICATION,
    Application,
    AuditEvent,
    Case,
    MentorProfile,
    OutboxMessage,
    Person,
    Relation,
    Timer,
)
from lifecycle.qualifications import evaluate


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
    for application in tx.session.scalars(select(Application).where(Application.case_id.in_(ids))):
        subjects[application.case_id] = application
    for relation in tx.session.scalars(select(Relation).where(Relation.case_id.in_(ids))):
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
    events = tx.session.scalars(
        select(AuditEvent).where(AuditEvent.case_id == case.id).order_by(AuditEvent.id)
    ).all()
    timers = tx.session.scalars(
        select(Timer).where(Timer.case_id == case.id).order_by(Timer.due_at)
    ).all()
    messages = tx.session.scalars(
        select(OutboxMessage).where(OutboxMessage.case_id == case.id).order_by(OutboxMessage.id)
    ).all()
    ids = {e.actor_id for e in events}
    rows = tx.session.execute(select(Person.id, Person.name).where(Person.id.in_(ids)))
    names = {person_id: name for person_id, name in rows}
    entries: list[dict[str, Any]] = [
        {
            "at": _iso(event.at, tx),
            "kind": "step",
            "trigger": event.trigger,
            "from": event.from_state,
            "to": event.to_state,
            "actor": names[event.actor_id] if event.actor_id else "system",
            "role": event.actor_role,
            "comment": event.comment,
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


def work_queue(tx: Tx, *, language: str) -> list[dict[str, Any]]:
    """Cases that wait for a coordinator or are overdue, overdue first, then oldest first."""
    overdue = {
        case_id: due
        for case_id, due in tx.session.execute(
            select(Timer.case_id, func.min(Timer.due_at))
            .join(Case, Case.id == Timer.case_id)
            .where(
                Timer.status == "fired",
                Timer.entry_event_id == Case.entry_event_id,
                Timer.name.in_(_overdue_timer_names(tx)),
            )
            .group_by(Timer.case_id)
        )
    }
    waiting_states = [
        (name, state.name)
        for name, workflow in tx.workflows.items()
        for state in workflow.states.values()
        if state.waits_for == "coordinator"
    ]
    cases = tx.session.scalars(
        select(Case).where(
            or_(
                Case.id.in_(overdue),
                *[
                    and_(Case.workflow == workflow, Case.state == state)
                    for workflow, state in waiting_states
                ],
            )
        )
    ).all()
    items = []
    for case in cases:
        state = tx.workflows[case.workflow].state(case.state)
        items.append(
            {
                "id": case.ref,
                "state": case.state,
                "action": state.action[language] if state.action else "",
                "since": case.state_entered_at,
                "overdue_since": overdue.get(case.id),
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
    rows = tx.session.execute(
        select(Case.workflow, Case.state, func.count()).group_by(Case.workflow, Case.state)
    )
    counts = {(workflow, state): count for workflow, state, count in rows}
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
