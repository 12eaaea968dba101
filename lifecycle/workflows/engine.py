"""The transition path: fire a workflow on a case, record every effect in the caller's transaction.

State, audit event, timers and outbox rows are written together; the caller commits. A refusal
or a failure anywhere raises, and the caller's rollback leaves the case exactly as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from lifecycle.config import Settings
from lifecycle.errors import Conflict, NotFound, Refused
from lifecycle.store import rows
from lifecycle.store.models import (
    APPLICATION,
    CASE_PREFIX,
    MENTORING,
    Application,
    AuditEvent,
    Case,
    Person,
    Relation,
    table,
)
from lifecycle.workflows import outbox, timers
from lifecycle.workflows.spec import Context, TransitionSpec, Workflow


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


# The subject and its people come with the case: every step reads them. So do the mentor's
# profile (the request's guards) and the meetings (reminders count from the first one),
# joined: a lazy load costs several times the join. Built once: session.get() would build
# the statement and its options on every step.
_SUBJECT = {
    APPLICATION: (joinedload(Case.application).joinedload(Application.person),),
    MENTORING: (
        joinedload(Case.relation).joinedload(Relation.mentor).joinedload(Person.profile),
        joinedload(Case.relation).joinedload(Relation.mentee),
        joinedload(Case.relation).joinedload(Relation.meetings),
    ),
}
_LOAD = {
    workflow: select(Case).options(*options).where(Case.id == bindparam("case_id"))
    for workflow, options in (
        *_SUBJECT.items(),
        ("", (*_SUBJECT[APPLICATION], *_SUBJECT[MENTORING])),
    )
}


def load_case(tx: Tx, ref: str) -> tuple[Case, Application | Relation]:
    workflow, case_id = parse_ref(ref)
    found = tx.session.execute(_LOAD[workflow], {"case_id": case_id}).unique()
    case = found.scalar_one_or_none()
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


PARTIES = frozenset({"mentor", "mentee"})


def _texts(ctx: Context, role: str) -> tuple[str, str]:
    """The step's (comment, party text). A mentor's or a mentee's own words are for the two
    parties (SPEC §6a), so they never go into the comment, which the staff read."""
    typed = [str(ctx.values[key]) for key in ("reason", "message") if ctx.values.get(key)]
    if role in PARTIES:
        return "", " — ".join(typed)
    if ctx.override_reason:
        typed.append(f"override: {ctx.override_reason}")
    return " — ".join(typed), ""


def _detail(ctx: Context, spec: TransitionSpec) -> dict[str, Any] | None:
    """What the step chose — its choice fields, and what its effect adds — or None."""
    chosen = {
        f.name: ctx.values[f.name]
        for f in spec.fields
        if f.type == "choice" and f.name in ctx.values
    }
    return {**chosen, **ctx.detail} or None


@dataclass(frozen=True)
class Step:
    """The audit event a step wrote."""

    id: int
    trigger: str
    from_state: str | None
    to_state: str


_EVENTS = table(AuditEvent)
_CASES = table(Case)
_INSERT_EVENT = insert(_EVENTS).returning(_EVENTS.c.id)
# The version read when the case was loaded must still be there: otherwise someone else
# changed the case in between, and this step changes nothing.
_WRITE_CASE = (
    update(_CASES)
    .where(_CASES.c.id == bindparam("case_id"), _CASES.c.version == bindparam("seen_version"))
    .values(
        state=bindparam("new_state"),
        version=bindparam("new_version"),
        updated_at=bindparam("now"),
        state_entered_at=bindparam("entered_at"),
        entry_event_id=bindparam("entry_event"),
    )
)


def _record(
    tx: Tx, ctx: Context, workflow: Workflow, spec: TransitionSpec, from_state: str | None
) -> Step:
    case = ctx.case
    to_state = spec.dest or case.state
    moved = to_state != from_state
    connection = tx.session.connection()
    role = _acting_role(ctx, spec)
    comment, party_text = _texts(ctx, role)
    event = Step(
        id=connection.execute(
            _INSERT_EVENT,
            {
                "case_id": case.id,
                "at": tx.now,
                "actor_id": ctx.actor.id if ctx.actor else None,
                "actor_name": ctx.actor.name if ctx.actor else "",
                "actor_role": role,
                "trigger": spec.trigger,
                "from_state": from_state,
                "to_state": to_state,
                "comment": comment,
                "party_text": party_text,
                "detail": _detail(ctx, spec),
            },
        ).scalar_one(),
        trigger=spec.trigger,
        from_state=from_state,
        to_state=to_state,
    )
    written = {
        "state": to_state,
        # Every step, even one that keeps the state: a page showing the old version conflicts.
        "version": case.version + (from_state is not None),
        "updated_at": tx.now,
        "state_entered_at": tx.now if moved else case.state_entered_at,
        "entry_event_id": event.id if moved else case.entry_event_id,
    }
    result = connection.execute(
        _WRITE_CASE,
        {
            "case_id": case.id,
            "seen_version": case.version,
            "new_state": written["state"],
            "new_version": written["version"],
            "now": written["updated_at"],
            "entered_at": written["state_entered_at"],
            "entry_event": written["entry_event_id"],
        },
    )
    if result.rowcount != 1:
        raise Conflict(
            f"case {case.ref} was changed by someone else at the same time; reload it and try again"
        )
    # The row is written: the loaded case shows it without writing it again.
    for key, value in written.items():
        set_committed_value(case, key, value)
    tx.session.flush()  # what the effect changed, which the timers and emails may read
    timers.reconcile(ctx, workflow, new_entry=moved, new_case=from_state is None)
    emails = spec.emails + (workflow.state(to_state).emails if moved else ())
    outbox.enqueue(ctx, event.id, emails)
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
) -> tuple[Case, Step]:
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
    _refuse_start(ctx, workflow)
    rows.add(tx.session, case)
    subject.case_id = case.id
    rows.add(tx.session, subject)
    event = _record(tx, ctx, workflow, start, None)
    return case, event


def check_start(
    tx: Tx,
    *,
    workflow: Workflow,
    subject: Application | Relation,
    actor: Person,
    roles: frozenset[str],
    skip: frozenset[str] = frozenset(),
) -> None:
    """Refused as open_case would refuse this subject, but for the guards in `skip`; nothing
    is written, and the subject and actor may be objects no session holds."""
    case = Case(workflow=workflow.name, state="", version=1)
    ctx = Context(tx.session, tx.settings, tx.now, case, subject, actor, roles, {})
    _refuse_start(ctx, workflow, skip)


def _refuse_start(ctx: Context, workflow: Workflow, skip: frozenset[str] = frozenset()) -> None:
    start = workflow.start
    if not ctx.roles & set(start.roles):
        raise Refused(f"'{start.trigger}' may be done by {', '.join(start.roles)}", rule="role")
    with ctx.session.no_autoflush:
        for name in start.guards:
            reason = None if name in skip else workflow.registries.guards[name](ctx)
            if reason:
                raise Refused(reason, rule=name)


def advance(
    tx: Tx,
    *,
    case: Case,
    trigger: str,
    actor: Person | None,
    values: dict[str, Any] | None = None,
    override_reason: str = "",
    expected_version: int | None = None,
) -> Step:
    """Fire one trigger on a loaded case; refusals and conflicts raise and change nothing."""
    if expected_version is not None and case.version != expected_version:
        raise Conflict(
            f"case {case.ref} was changed by someone else: it is now '{case.state}' "
            f"(version {case.version}, you saw {expected_version})"
        )
    workflow = tx.workflows[case.workflow]
    subject = case.subject
    ctx = Context(
        tx.session,
        tx.settings,
        tx.now,
        case,
        subject,
        actor,
        roles_on(subject, actor),
        dict(values or {}),
        override_reason.strip(),
    )
    from_state = case.state
    spec = workflow.fire(ctx, trigger)
    return _record(tx, ctx, workflow, spec, from_state)
