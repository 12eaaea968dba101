"""Intake rounds: the semiannual schedule, coordinators' changes, and each round's mail, once.

A round's announcement, closing reminder and summary are each queued in one transaction
with the flag that records it, so however often the worker runs or restarts, each goes
out once.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from lifecycle.errors import InvalidInput, NotFound, Refused
from lifecycle.store.models import APPLICATION, Application, Case, IntakeRound, Person, Subscriber
from lifecycle.workflows import outbox
from lifecycle.workflows.engine import Tx

SEASONS = {3: ("Kevadvoor", "Spring round"), 9: ("Sügisvoor", "Autumn round")}
HORIZON = timedelta(days=366)


def _name(opens_on: date) -> str:
    season = SEASONS.get(opens_on.month, ("Vastuvõtuvoor", "Intake round"))[0]
    return f"{season} {opens_on.year}"


def schedule_dates(tx: Tx, *, until: datetime) -> list[date]:
    """The schedule's opening dates, from the round that may still be open, up to `until`."""
    # From the earliest opening whose round may still be open today.
    first = (tx.now - tx.settings.intake_length).astimezone(tx.settings.time_zone).date()
    return [
        date(year, month, day)
        for year in range(first.year, until.year + 1)
        for month, day in tx.settings.intake_opens
        if first <= date(year, month, day) <= until.date()
    ]


def ensure_rounds(tx: Tx) -> list[IntakeRound]:
    """Create the scheduled rounds of the coming year that do not exist yet."""
    created = []
    for opens_on in schedule_dates(tx, until=tx.now + HORIZON):
        if tx.session.scalar(select(IntakeRound.id).where(IntakeRound.scheduled_for == opens_on)):
            continue
        opens_at = datetime.combine(
            opens_on, time(tx.settings.intake_open_hour), tzinfo=tx.settings.time_zone
        )
        round_ = IntakeRound(
            name=_name(opens_on),
            opens_at=opens_at,
            closes_at=opens_at + tx.settings.intake_length,
            scheduled_for=opens_on,
        )
        try:
            with tx.session.begin_nested():
                tx.session.add(round_)
        except IntegrityError:  # another worker created it at the same moment
            continue
        created.append(round_)
    return created


# -- coordinators' changes ------------------------------------------------------------------


def _local(text: str, tx: Tx, key: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(key, f"{text!r} is not a date and time like 2027-03-01T09:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=tx.settings.time_zone)


def _check_span(opens_at: datetime, closes_at: datetime) -> None:
    if closes_at <= opens_at:
        raise InvalidInput("closes", "the round must close after it opens")


# The longest round name taken (its column holds 100 characters).
ROUND_NAME_LIMIT = 100


def create_round(tx: Tx, *, name: str, opens: str, closes: str) -> IntakeRound:
    opens_at, closes_at = _local(opens, tx, "opens"), _local(closes, tx, "closes")
    _check_span(opens_at, closes_at)
    if not name.strip():
        raise InvalidInput("name", "is required")
    if len(name.strip()) > ROUND_NAME_LIMIT:
        raise InvalidInput("name", f"must be at most {ROUND_NAME_LIMIT} characters")
    round_ = IntakeRound(name=name.strip(), opens_at=opens_at, closes_at=closes_at)
    tx.session.add(round_)
    tx.session.flush()
    return round_


def _round(tx: Tx, round_id: int) -> IntakeRound:
    round_ = tx.session.get(IntakeRound, round_id)
    if round_ is None:
        raise NotFound(f"no intake round {round_id}")
    if round_.cancelled_at is not None:
        raise Refused(f"intake round {round_id} is cancelled", rule="round_cancelled")
    return round_


def move_round(tx: Tx, *, round_id: int, opens: str, closes: str) -> IntakeRound:
    round_ = _round(tx, round_id)
    opens_at, closes_at = _local(opens, tx, "opens"), _local(closes, tx, "closes")
    _check_span(opens_at, closes_at)
    if round_.announced_at is not None and opens_at != round_.opens_at:
        raise Refused(
            "the round has been announced: only its closing can move", rule="round_announced"
        )
    round_.opens_at, round_.closes_at = opens_at, closes_at
    return round_


def cancel_round(tx: Tx, *, round_id: int) -> IntakeRound:
    round_ = _round(tx, round_id)
    round_.cancelled_at = tx.now
    return round_


def list_rounds(tx: Tx) -> list[dict[str, Any]]:
    zone = tx.settings.time_zone
    rows = tx.session.execute(
        select(Application.intake_round_id, func.count()).group_by(Application.intake_round_id)
    )
    counts = {round_id: count for round_id, count in rows}
    return [
        {
            "id": r.id,
            "name": r.name,
            "opens": r.opens_at.astimezone(zone).isoformat(timespec="minutes"),
            "closes": r.closes_at.astimezone(zone).isoformat(timespec="minutes"),
            "status": _status(tx, r),
            "applications": counts.get(r.id, 0),
        }
        for r in tx.session.scalars(select(IntakeRound).order_by(IntakeRound.opens_at))
    ]


def _status(tx: Tx, round_: IntakeRound) -> str:
    if round_.cancelled_at is not None:
        return "cancelled"
    if tx.now < round_.opens_at:
        return "upcoming"
    return "open" if tx.now < round_.closes_at else "closed"


# -- the round's mail -------------------------------------------------------------------------


def run_round_mail(tx: Tx) -> dict[str, int]:
    """Announce opened rounds, remind before closing, summarise closed ones: each once."""
    done = {"announced": 0, "reminded": 0, "summarized": 0}
    ensure_rounds(tx)
    live = IntakeRound.cancelled_at.is_(None)
    for round_ in tx.session.scalars(
        select(IntakeRound)
        .with_for_update(skip_locked=True)
        .where(live, IntakeRound.announced_at.is_(None), IntakeRound.opens_at <= tx.now)
    ):
        round_.announced_at = tx.now
        if tx.now < round_.closes_at:  # a round missed entirely is not announced late
            _to_audience(tx, round_, "round_opened")
            done["announced"] += 1
    for round_ in tx.session.scalars(
        select(IntakeRound)
        .with_for_update(skip_locked=True)
        .where(
            live,
            IntakeRound.reminded_at.is_(None),
            IntakeRound.closes_at <= tx.now + tx.settings.intake_reminder,
        )
    ):
        round_.reminded_at = tx.now
        if tx.now < round_.closes_at:
            _to_audience(tx, round_, "round_closing")
            done["reminded"] += 1
    for round_ in tx.session.scalars(
        select(IntakeRound)
        .with_for_update(skip_locked=True)
        .where(live, IntakeRound.summarized_at.is_(None), IntakeRound.closes_at <= tx.now)
    ):
        round_.summarized_at = tx.now
        _summary(tx, round_)
        done["summarized"] += 1
    return done


def _to_audience(tx: Tx, round_: IntakeRound, template: str) -> None:
    """Confirmed subscribers and past applicants who asked to be told; each address once."""
    people = {
        p.email: p for p in tx.session.scalars(select(Person).where(Person.notify_rounds.is_(True)))
    }
    subscribers = {s.email: s for s in tx.session.scalars(select(Subscriber))}
    for email in sorted(people.keys() | subscribers.keys()):
        person, subscriber = people.get(email), subscribers.get(email)
        # Unsubscribing either way (as a person or as a subscriber) stops round mail.
        if (person and person.bulk_opt_out_at) or (subscriber and subscriber.unsubscribed_at):
            continue
        reader: Person | Subscriber
        if subscriber is not None and subscriber.confirmed_at is not None:
            reader = subscriber
        elif person is not None:
            reader = person
        else:
            continue
        outbox.add_bulk(
            tx.session,
            tx.settings,
            key=f"round:{round_.id}:{template}:{email}",
            template=template,
            reader=reader,
            now=tx.now,
            refs={"round_id": round_.id},
        )


def _summary(tx: Tx, round_: IntakeRound) -> None:
    """The applications the round received, by their state when it closed."""
    states = tx.workflows[APPLICATION].states
    counts = [
        {"label": dict(states[state].label), "count": count}
        for state, count in sorted(round_counts(tx, round_.id).items())
    ]
    for coordinator in tx.session.scalars(select(Person).where(Person.role == "coordinator")):
        outbox.add(
            tx.session,
            tx.settings,
            key=f"round:{round_.id}:summary:{coordinator.id}",
            template="round_summary",
            person=coordinator,
            now=tx.now,
            refs={"round_id": round_.id, "counts": counts},
        )


def round_counts(tx: Tx, round_id: int) -> dict[str, int]:
    """Applications received in a round, by their state now."""
    rows = tx.session.execute(
        select(Case.state, func.count())
        .join(Application, Application.case_id == Case.id)
        .where(Application.intake_round_id == round_id)
        .group_by(Case.state)
    )
    return {state: count for state, count in rows}
