"""The intake round open now and the next one: applications are taken only while a round is open.

The application's guards and the submission ask these; the rounds themselves — the schedule,
coordinators' changes and each round's mail — live in lifecycle.schedule.intake.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.store.models import IntakeRound


def current_round(session: Session, now: datetime) -> IntakeRound | None:
    return session.scalar(
        select(IntakeRound)
        .where(
            IntakeRound.opens_at <= now,
            IntakeRound.closes_at > now,
            IntakeRound.cancelled_at.is_(None),
        )
        .order_by(IntakeRound.opens_at)
        .limit(1)
    )


def next_round(session: Session, now: datetime) -> IntakeRound | None:
    return session.scalar(
        select(IntakeRound)
        .where(IntakeRound.opens_at > now, IntakeRound.cancelled_at.is_(None))
        .order_by(IntakeRound.opens_at)
        .limit(1)
    )
