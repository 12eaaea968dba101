"""Durable timers: the rows a state's timers become, kept in step with the case on every step."""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import insert, select, update

from lifecycle.models import Application, Relation, Timer
from lifecycle.workflow import Anchor, Context, Workflow

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


def reconcile(ctx: Context, workflow: Workflow, *, new_entry: bool) -> None:
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
    ctx.session.execute(
        update(Timer)
        .where(
            Timer.case_id == case.id,
            Timer.status == "pending",
            Timer.entry_event_id != case.entry_event_id,
        )
        .values(status="cancelled", finished_at=ctx.now)
    )
    existing: dict[tuple[str, datetime], Timer] = {}
    started = set()  # repeating timers that already run in this entry
    if not new_entry:  # a step within the state: this entry's timers may have to move
        current = ctx.session.scalars(
            select(Timer).where(
                Timer.case_id == case.id, Timer.entry_event_id == case.entry_event_id
            )
        )
        for timer in current:
            if timer.name in repeating:
                started.add(timer.name)
            elif (timer.name, timer.due_at) in desired:
                existing[(timer.name, timer.due_at)] = timer
            elif timer.status == "pending":
                timer.status = "cancelled"
                timer.finished_at = ctx.now
    rows = []
    for name, due_at in desired:
        if name in started:
            continue
        kept = existing.get((name, due_at))
        if kept is None:
            rows.append(
                {
                    "case_id": case.id,
                    "entry_event_id": case.entry_event_id,
                    "state": case.state,
                    "name": name,
                    "due_at": due_at,
                    "status": "pending",
                }
            )
        elif kept.status == "cancelled":  # an anchor moved back to where it was
            kept.status = "pending"
            kept.finished_at = None
    if rows:
        ctx.session.execute(insert(Timer), rows)
