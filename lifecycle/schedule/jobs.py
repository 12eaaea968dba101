"""Job bodies the worker runs: timers, digests. Plain functions; the scheduler only calls them.

Each timer fires in its own transaction, which also marks it: a crash before the commit
leaves it pending (fired again later), after the commit it is done. Several workers on
PostgreSQL skip the rows another one has locked; SQLite serialises the transactions.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from lifecycle.bootstrap import App
from lifecycle.cases import queries
from lifecycle.errors import MentorlusError
from lifecycle.store.models import Case, Person, Timer
from lifecycle.workflows import engine, outbox
from lifecycle.workflows.engine import Tx
from lifecycle.workflows.spec import Context, TimerSpec

log = logging.getLogger(__name__)


def due_timers(app: App, *, limit: int = 500) -> list[int]:
    with app.unit() as tx:
        return list(
            tx.session.scalars(
                select(Timer.id)
                .where(Timer.status == "pending", Timer.due_at <= tx.now)
                .order_by(Timer.due_at, Timer.id)
                .limit(limit)
            )
        )


def fire_due_timers(app: App) -> dict[str, int]:
    """Fire every timer due now, oldest first; returns how many fired and were skipped."""
    counts = {"fired": 0, "skipped": 0}
    while ids := due_timers(app):
        for timer_id in ids:
            result = fire_timer(app, timer_id)
            if result:
                counts[result] += 1
        if len(ids) < 500:
            break
    return counts


def fire_timer(app: App, timer_id: int) -> str | None:
    """Fire one timer if it is still pending: 'fired', 'skipped', or None (someone else did)."""
    with app.unit() as tx:
        found = tx.session.execute(
            select(Timer.case_id, Timer.state, Timer.name, Case.workflow)
            .join(Case, Case.id == Timer.case_id)
            .where(Timer.id == timer_id)
        ).one_or_none()
        if found is None:
            return None
        case_id, state, name, workflow = found
        if _steps(tx, workflow, state, name):
            # A timer that moves its case locks the case before the timer, the order of a
            # person's step (the case, then its timers): the two wait for each other instead
            # of deadlocking. A timer that only sends mail leaves the case alone.
            tx.session.execute(select(Case.id).where(Case.id == case_id).with_for_update())
        query = select(Timer).where(Timer.id == timer_id, Timer.status == "pending")
        query = query.with_for_update(skip_locked=True)  # SQLite: BEGIN IMMEDIATE instead
        timer = tx.session.scalar(query)
        if timer is None:
            return None
        result, note = _fire(tx, timer)
        timer.status, timer.finished_at, timer.note = result, tx.now, note
        log.info("timer %s %s on case %s: %s %s", timer.id, timer.name, timer.case_id, result, note)
        return result


def _steps(tx: Tx, workflow: str, state: str, name: str) -> bool:
    """Whether the timer fires a step on its case (rather than only sending mail)."""
    timers = tx.workflows[workflow].state(state).timers
    return any(spec.name == name and spec.trigger for spec in timers)


def _fire(tx: Tx, timer: Timer) -> tuple[str, str]:
    case, subject = engine.load_case(tx, str(timer.case_id))
    workflow = tx.workflows[case.workflow]
    spec = next((t for t in workflow.state(timer.state).timers if t.name == timer.name), None)
    if spec is None or case.entry_event_id != timer.entry_event_id:
        return "skipped", "the case has left the state this timer belonged to"
    if spec.after < timedelta(0) and tx.now >= timer.due_at - spec.after:
        return "skipped", "too late: what it reminds of has already happened"
    if spec.repeat:
        _rearm(tx, timer, spec)
    if spec.email is not None:
        ctx = Context(tx.session, tx.settings, tx.now, case, subject, None, frozenset({"system"}))
        for person in outbox.recipients(ctx, spec.email.to):
            outbox.add(
                tx.session,
                tx.settings,
                key=f"timer:{timer.id}:{person.id}",
                template=spec.email.template,
                person=person,
                now=tx.now,
                case_id=case.id,
                link=spec.email.link,
            )
    elif spec.trigger is not None:
        # Marked first: the step leaves the state, and leaving cancels pending timers.
        timer.status = "fired"
        savepoint = tx.session.begin_nested()
        try:
            engine.advance(tx, case=case, trigger=spec.trigger, actor=None)
        except MentorlusError as refusal:
            savepoint.rollback()
            return "skipped", f"'{spec.trigger}' was refused: {refusal}"
        savepoint.commit()
    return "fired", ""


def _rearm(tx: Tx, timer: Timer, spec: TimerSpec) -> None:
    """The next round of a repeating timer, in the same state entry.

    After downtime the missed rounds are not made up one by one: one check-in goes out,
    and the next is due a whole period after the last scheduled time that has passed.
    """
    due = timer.due_at + spec.after
    while due <= tx.now:
        due += spec.after
    tx.session.add(
        Timer(
            case_id=timer.case_id,
            entry_event_id=timer.entry_event_id,
            state=timer.state,
            name=timer.name,
            due_at=due,
            status="pending",
            note="",
        )
    )


def send_digests(tx: Tx) -> int:
    """Each coordinator's work queue, once a day from the digest hour; none when it is empty."""
    local = tx.now.astimezone(tx.settings.time_zone)
    if local.hour < tx.settings.digest_hour:
        return 0
    sent = 0
    for coordinator in tx.session.scalars(select(Person).where(Person.role == "coordinator")):
        key = f"digest:{local.date()}:{coordinator.id}"
        if outbox.exists(tx.session, key):
            continue
        items = queries.work_queue(tx, language=coordinator.language)
        if not items:
            continue
        queue = [
            {
                "id": item["id"],
                "action": item["action"],
                "since": item["since"].isoformat(),
                "overdue_since": item["overdue_since"].isoformat()
                if item["overdue_since"]
                else None,
            }
            for item in items
        ]
        try:
            with tx.session.begin_nested():
                outbox.add(
                    tx.session,
                    tx.settings,
                    key=key,
                    template="digest",
                    person=coordinator,
                    now=tx.now,
                    refs={"queue": queue},
                )
        except IntegrityError:  # another worker sent this digest at the same moment
            continue
        sent += 1
    return sent
