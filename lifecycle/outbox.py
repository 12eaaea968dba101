"""The outbox: emails written in the same transaction as the change that causes them."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from lifecycle.models import Application, AuditEvent, OutboxMessage, Person, Relation
from lifecycle.workflow import Context, Email


def recipients(ctx: Context, to: tuple[str, ...]) -> list[Person]:
    """The people an email addressed to these roles reaches, each once."""
    people: dict[int, Person] = {}
    subject = ctx.subject
    for role in to:
        if role == "applicant" and isinstance(subject, Application):
            people[subject.person.id] = subject.person
        elif role == "committee" and isinstance(subject, Application):
            for seat in subject.votes:
                if seat.vote != "recuse":
                    people[seat.member.id] = seat.member
        elif role == "mentor" and isinstance(subject, Relation):
            people[subject.mentor.id] = subject.mentor
        elif role == "mentee" and isinstance(subject, Relation):
            people[subject.mentee.id] = subject.mentee
        elif role == "coordinators":
            for person in ctx.session.scalars(select(Person).where(Person.role == "coordinator")):
                people[person.id] = person
    return list(people.values())


def enqueue(ctx: Context, event: AuditEvent, emails: tuple[Email, ...], *, domain: str) -> None:
    """Queue each email once per reader for this step: the key makes a repeat a no-op."""
    for email in emails:
        for person in recipients(ctx, email.to):
            key = f"{ctx.case.id}:{event.id}:{email.template}:{person.id}"
            ctx.session.add(
                OutboxMessage(
                    idempotency_key=key,
                    case_id=ctx.case.id,
                    event_id=event.id,
                    template=email.template,
                    to_person_id=person.id,
                    language=person.language,
                    message_id=f"<{uuid.uuid4()}@{domain}>",
                    status="pending",
                    attempts=0,
                    created_at=ctx.now,
                    next_attempt_at=ctx.now,
                    last_error="",
                )
            )
