"""Durable timers: the rows a state's timers become, kept in step with the case on every step."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from lifecycle.store.models import Application, Relation, Timer, table
from lifecycle.workflows.spec import Anchor, Context, Workflow

# Dates without a time (the agreement's end) count from this local hour.
ANCHOR_HOUR = time(9, 0)


def interview_at(ctx: Context) -> datetime | None:
    return ctx.subject.interview_at if isinstance(ctx.subject, Application) else None


def first_meeting_at(ctx: Context) -> datetime | None:
    if not isinstance(ctx.subject, Relation):
        return None
    # Not meetings[0]: a meeting added in this step is appended, not sorted in.
    planned = [m.starts_at for m in ctx.subject.meetings if m.cancelled_at is None]
    return min(planned, default=None)


def agreement_ends_on(ctx: Context) -> datetime | None:
    if not isinstance(ctx.subject, Relation) or not ctx.subject.agreements:
        return None
    signed = [a for a in ctx.subject.agreements if a.signed_by("mentor") and a.signed_by("mentee")]
    if not signed:
        return None
    return datetime.combine(signed[-1].ends_on, ANCHOR_HOUR, tzinfo=ctx.settings.time_zone)


ANCHORS: dict[str, Anchor] = {
    anchor.__name__: anchor for anchor in (interview_at, first_meeting_at, agreement_ends_on)
}


_TIMERS = table(Timer)
# The other entries are the older ones (event ids grow). Said so, SQLite searches the case's
# timers by the unique index; with "!=" it walked every pending timer of every case.
_CANCEL_OTHER_ENTRIES = (
    update(_TIMERS)
    .where(
        _TIMERS.c.case_id == bindparam("of_case"),
        _TIMERS.c.entry_event_id < bindparam("current_entry"),
        _TIMERS.c.status == "pending",
    )
    .values(status="cancelled", finished_at=bindparam("now"))
)
_OF_THIS_ENTRY = select(_TIMERS.c.id, _TIMERS.c.name, _TIMERS.c.due_at, _TIMERS.c.status).where(
    _TIMERS.c.case_id == bindparam("of_case"),
    _TIMERS.c.entry_event_id == bindparam("current_entry"),
)
_SET_STATUS = (
    update(_TIMERS)
    .where(_TIMERS.c.id == bindparam("timer_id"))
    .values(status=bindparam("new_status"), finished_at=bindparam("finished"))
)
_INSERT = insert(_TIMERS)


def _status(timer_id: int, status: str, finished: datetime | None) -> dict[str, Any]:
    return {"timer_id": timer_id, "new_status": status, "finished": finished}


def reconcile(ctx: Context, workflow: Workflow, *, new_entry: bool, new_case: bool) -> None:
    """Cancel the pending timers the case no longer needs; create the ones its state declares.

    Timers belong to one entry into a state (the case's entry event): leaving the state
    cancels them, and a moved anchor (a rescheduled interview) moves them. A repeating
    timer re-arms itself when it fires, so any round of it in this entry is kept.
    """
    case = ctx.case
    assert case.entry_event_id is not None
    desired = {}
    specs = workflow.state(case.state).timers
    repeating = {spec.name for spec in specs if spec.repeat}
    for spec in specs:
        if spec.cancel_when and ANCHORS[spec.cancel_when](ctx) is not None:
            continue
        anchor = (
            case.state_entered_at if spec.anchor == "state_entry" else ANCHORS[spec.anchor](ctx)
        )
        if anchor is not None:
            desired[(spec.name, anchor + spec.after)] = spec
    connection = ctx.session.connection()
    entry = {"of_case": case.id, "current_entry": case.entry_event_id}
    if not new_case:  # a new case has no timers yet
        connection.execute(_CANCEL_OTHER_ENTRIES, {**entry, "now": ctx.now})
    kept: set[tuple[str, datetime]] = set()
    started = set()  # repeating timers that already run in this entry
    changes = []
    if not new_entry:  # a step within the state: this entry's timers may have to move
        for timer in connection.execute(_OF_THIS_ENTRY, entry):
            if timer.name in repeating:
                started.add(timer.name)
            elif (timer.name, timer.due_at) in desired:
                kept.add((timer.name, timer.due_at))
                if timer.status == "cancelled":  # an anchor moved back to where it was
                    changes.append(_status(timer.id, "pending", None))
            elif timer.status == "pending":
                changes.append(_status(timer.id, "cancelled", ctx.now))
    if changes:
        connection.execute(_SET_STATUS, changes)
    rows = [
        {
            "case_id": case.id,
            "entry_event_id": case.entry_event_id,
            "state": case.state,
            "name": name,
            "due_at": due_at,
            "status": "pending",
        }
        for name, due_at in desired
        if name not in started and (name, due_at) not in kept
    ]
    if rows:
        connection.execute(_INSERT, rows)
