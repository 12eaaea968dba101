"""What the service is about to do by itself: every timer and round email until a date."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any

from sqlalchemy import select

from lifecycle.schedule import intake
from lifecycle.store.models import Case, IntakeRound, Timer
from lifecycle.workflows.engine import Tx


def until(tx: Tx, end: datetime) -> list[dict[str, Any]]:
    """Pending timers and intake-round mail due by `end`, if nobody acts, in time order."""
    zone = tx.settings.time_zone
    items: list[dict[str, Any]] = []
    rows = tx.session.execute(
        select(Timer, Case)
        .join(Case, Case.id == Timer.case_id)
        .where(Timer.status == "pending", Timer.due_at <= end)
    )
    for timer, case in rows:
        spec = next(
            t for t in tx.workflows[case.workflow].state(timer.state).timers if t.name == timer.name
        )
        if spec.email is not None:
            what = f"email {spec.email.template} to {', '.join(spec.email.to)}"
        elif spec.trigger is not None:
            what = f"step {spec.trigger} ({case.state} → automatic)"
        else:
            what = "case becomes overdue for coordinators"
        items.append({"at": timer.due_at, "case": case.ref, "timer": timer.name, "does": what})
    rounds = list(tx.session.scalars(select(IntakeRound).where(IntakeRound.cancelled_at.is_(None))))
    scheduled = {r.scheduled_for for r in rounds}
    for opens_on in intake.schedule_dates(tx, until=end):
        if opens_on not in scheduled:  # the worker will create it
            opens_at = datetime.combine(opens_on, time(tx.settings.intake_open_hour), tzinfo=zone)
            rounds.append(
                IntakeRound(
                    name=f"round of {opens_on}",
                    opens_at=opens_at,
                    closes_at=opens_at + tx.settings.intake_length,
                )
            )
    for round_ in rounds:
        events = [
            (round_.announced_at, round_.opens_at, "email round_opened to subscribers"),
            (
                round_.reminded_at,
                round_.closes_at - tx.settings.intake_reminder,
                "email round_closing to subscribers",
            ),
            (round_.summarized_at, round_.closes_at, "email round_summary to coordinators"),
        ]
        for done, at, what in events:
            if done is None and at <= end:
                items.append(
                    {"at": max(at, tx.now), "case": None, "timer": round_.name, "does": what}
                )
    items.sort(key=lambda item: item["at"])
    return [
        {**item, "at": item["at"].astimezone(zone).isoformat(timespec="minutes")} for item in items
    ]
