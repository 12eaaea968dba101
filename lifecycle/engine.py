"""The transition path: fire a workflow on a case, record every effect in the caller's transaction.

State, audit event, timers and outbox rows are written together; the caller commits. A refusal
or a failure anywhere raises, and the caller's rollback leaves the case exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.exc import StaleDataError

from lifecycle import outbox, timers
from lifecycle.config import Settings
from lifecycle.errors import Conflict, NotFound, Refused
from lifecycle.models import (
    APPLICATION,
    CASE_PREFIX,
    MENTORING,
    Application,
    AuditEvent,
    Case,
    Person,
    Relation,
)
from lifecycle.workflow import Context, TransitionSpec, Workflow


@dataclass
class Tx:
    """One unit of work: an open transaction and what the steps inside it need."""

    session: Session
    settings: Settings
    workflows: dict[str, Workflow]
    now: datetime


def parse_ref(ref: str) -> tuple[str, int]:
    """'A-12' → ('mentor_application', 12); a bare number is accepted too."""
    prefix, _, number = ref.strip().upper().rpartition("-")
    workflows = {letter: name for name, letter in CASE_PREFIX.items()}
    # isdigit() alone would take '²' or a number no column holds.
    plain = number.isascii() and number.isdigit() and len(number) <= 9
    if not plain or (prefix and prefix not in workflows):
        raise NotFound(f"'{ref}' is not a case ID (like A-12 or M-7)")
    return workflows.get(prefix, ""), int(number)


def load_case(tx: Tx, ref: str) -> tuple[Case, Application | Relation]:
    workflow, case_id = parse_ref(ref)
    # The subject and its people come with the case: every step reads them.
    subjects = {
        APPLICATION: [joinedload(Case.application).joinedload(Application.person)],
        MENTORING: [
            joinedload(Case.relation).joinedload(Relation.mentor),
            joinedload(Case.relation).joinedload(Relation.mentee),
        ],
    }
    options = subjects.get(workflow) or [option for both in subjects.values() for option in both]
    case = tx.session.get(Case, case_id, options=options)
    if case is None or (workflow and case.workflow != workflow):
        raise NotFound(f"no case {ref}")
    return case, case.subject


def roles_on(subject: Application | Relation, actor: Person | None) -> frozenset[str]:
    """The roles a person has on this case; None is the system itself."""
    if actor is None:
        return frozenset({"system"})
    roles = set()
    if actor.role == "coordinator":
        roles.add("coordinator")
    if isinstance(subject, Application):
        if subject.person_id == actor.id:
            roles.add("applicant")
        if actor.role == "committee" and any(s.member_id == actor.id for s in subject.votes):
            roles.add("committee")
    else:
        if subject.mentor_id == actor.id:
            roles.add("mentor")
        if subject.mentee_id == actor.id:
            roles.add("mentee")
    return frozenset(roles)


def _comment(ctx: Context) -> str:
    parts = [str(ctx.values[key]) for key in ("reason", "message") if ctx.values.get(key)]
    if ctx.override_reason:
        parts.append(f"override: {ctx.override_reason}")
    return " — ".join(parts)


def _record(
    tx: Tx, ctx: Context, workflow: Workflow, spec: TransitionSpec, from_state: str | None
) -> AuditEvent:
    case = ctx.case
    moved = case.state != from_state
    if from_state is not None:
        case.version += 1  # every step, even one that keeps the state: a stale page conflicts
    case.updated_at = tx.now
    if moved:
        case.state_entered_at = tx.now
    # Inserted on its own, before the case is written: the case then takes its state and
    # its entry event in one UPDATE, and the event comes back without a flush.
    with tx.session.no_autoflush:
        event = tx.session.scalars(
            insert(AuditEvent).returning(AuditEvent),
            [
                {
                    "case_id": case.id,
                    "at": tx.now,
                    "actor_id": ctx.actor.id if ctx.actor else None,
                    "actor_role": _acting_role(ctx, spec),
                    "trigger": spec.trigger,
                    "from_state": from_state,
                    "to_state": case.state,
                    "comment": _comment(ctx),
                }
            ],
        ).one()
    if moved:
        case.entry_event_id = event.id
    timers.reconcile(ctx, workflow, new_entry=moved)
    emails = spec.emails + (workflow.state(case.state).emails if moved else ())
    outbox.enqueue(ctx, event, emails)
    tx.session.flush()
    return event


def _acting_role(ctx: Context, spec: TransitionSpec) -> str:
    """The role the actor used: the first of the step's roles that they hold."""
    return next(role for role in spec.roles if role in ctx.roles)


def open_case(
    tx: Tx,
    *,
    workflow: Workflow,
    subject: Application | Relation,
    actor: Person,
    roles: frozenset[str],
    values: dict[str, Any] | None = None,
) -> tuple[Case, AuditEvent]:
    """Start a case with the workflow's start step, after its role and guards allow it."""
    start = workflow.start
    case = Case(
        workflow=workflow.name,
        state=start.dest or "",
        version=1,
        opened_at=tx.now,
        updated_at=tx.now,
        state_entered_at=tx.now,
    )
    ctx = Context(tx.session, tx.settings, tx.now, case, subject, actor, roles, values or {})
    if not roles & set(start.roles):
        raise Refused(f"'{start.trigger}' may be done by {', '.join(start.roles)}", rule="role")
    with tx.session.no_autoflush:
        for name in start.guards:
            reason = workflow.registries.guards[name](ctx)
            if reason:
                raise Refused(reason, rule=name)
    tx.session.add(case)
    tx.session.flush()
    subject.case_id = case.id
    tx.session.add(subject)
    tx.session.flush()
    event = _record(tx, ctx, workflow, start, None)
    return case, event


def advance(
    tx: Tx,
    *,
    ref: str,
    trigger: str,
    actor: Person | None,
    values: dict[str, Any] | None = None,
    override_reason: str = "",
    expected_version: int | None = None,
) -> AuditEvent:
    """Fire one trigger on a case; refusals and conflicts raise and change nothing."""
    case, subject = load_case(tx, ref)
    if expected_version is not None and case.version != expected_version:
        raise Conflict(
            f"case {case.ref} was changed by someone else: it is now '{case.state}' "
            f"(version {case.version}, you saw {expected_version})"
        )
    workflow = tx.workflows[case.workflow]
    roles = roles_on(subject, actor)
    ctx = Context(
        tx.session,
        tx.settings,
        tx.now,
        case,
        subject,
        actor,
        roles,
        dict(values or {}),
        override_reason.strip(),
    )
    from_state, case_ref = case.state, case.ref
    try:
        spec = workflow.fire(ctx, trigger)
        return _record(tx, ctx, workflow, spec, from_state)
    except StaleDataError:
        raise Conflict(
            f"case {case_ref} was changed by someone else at the same time; reload it and try again"
        ) from None
