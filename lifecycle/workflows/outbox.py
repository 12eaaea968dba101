"""The outbox: emails written in the same transaction as the change that causes them."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from lifecycle.config import Settings
from lifecycle.store.models import (
    ActionToken,
    Application,
    OutboxMessage,
    Person,
    Relation,
    Subscriber,
    table,
)
from lifecycle.workflows import links
from lifecycle.workflows.spec import Context, Email

# An unsubscribe link must still work long after the announcement.
UNSUBSCRIBE_VALID = timedelta(days=365)


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


_TOKENS = table(ActionToken)
_MESSAGES = table(OutboxMessage)


def enqueue(ctx: Context, event_id: int, emails: tuple[Email, ...]) -> None:
    """Queue each email once per reader for this step: the key makes a repeat a no-op."""
    tokens = []
    rows = []
    for email in emails:
        for person in recipients(ctx, email.to):
            token_id = None
            if email.link is not None:
                token = links.token_row(
                    ctx.settings,
                    action=email.link,
                    now=ctx.now,
                    person_id=person.id,
                    case_id=ctx.case.id,
                )
                tokens.append(token)
                token_id = token["id"]
            rows.append(
                row(
                    ctx.settings,
                    key=f"{ctx.case.id}:{event_id}:{email.template}:{person.id}",
                    template=email.template,
                    to=(person.email, person.name),
                    language=person.language,
                    person_id=person.id,
                    now=ctx.now,
                    token_id=token_id,
                    case_id=ctx.case.id,
                    event_id=event_id,
                    refs=dict(ctx.refs, calendar=True) if email.calendar else ctx.refs,
                )
            )
    # Multi-row INSERTs: every step writes mail, and a row at a time is most of its cost.
    connection = ctx.session.connection()
    if tokens:
        connection.execute(insert(_TOKENS), tokens)
    if rows:
        connection.execute(insert(_MESSAGES), rows)


def add(
    session: Session,
    settings: Settings,
    *,
    key: str,
    template: str,
    person: Person,
    now: datetime,
    case_id: int | None = None,
    event_id: int | None = None,
    refs: dict[str, Any] | None = None,
    link: str | None = None,
) -> OutboxMessage:
    """One outbox row for a person, with its action link's token when the email has one."""
    token = None
    if link is not None:
        token = links.issue(
            session,
            links.token_row(settings, action=link, now=now, person_id=person.id, case_id=case_id),
        )
    return queue(
        session,
        row(
            settings,
            key=key,
            template=template,
            to=(person.email, person.name),
            language=person.language,
            person_id=person.id,
            now=now,
            token_id=token.id if token else None,
            case_id=case_id,
            event_id=event_id,
            refs=refs,
        ),
    )


def add_bulk(
    session: Session,
    settings: Settings,
    *,
    key: str,
    template: str,
    reader: Person | Subscriber,
    now: datetime,
    refs: dict[str, Any] | None = None,
) -> OutboxMessage | None:
    """Bulk mail (announcements): skipped for a reader who unsubscribed; the link unsubscribes."""
    if isinstance(reader, Person):
        if reader.bulk_opt_out_at is not None:
            return None
        to, person_id, subscriber_id = (reader.email, reader.name), reader.id, None
    else:
        if reader.unsubscribed_at is not None or reader.confirmed_at is None:
            return None
        to, person_id, subscriber_id = (reader.email, ""), None, reader.id
    token = links.issue(
        session,
        links.token_row(
            settings,
            action="unsubscribe",
            now=now,
            person_id=person_id,
            subscriber_id=subscriber_id,
            valid_for=UNSUBSCRIBE_VALID,
        ),
    )
    return queue(
        session,
        row(
            settings,
            key=key,
            template=template,
            to=to,
            language=reader.language,
            person_id=person_id,
            now=now,
            token_id=token.id if token else None,
            refs=refs,
            bulk=True,
        ),
    )


def exists(session: Session, key: str) -> bool:
    return (
        session.scalar(select(OutboxMessage.id).where(OutboxMessage.idempotency_key == key))
        is not None
    )


def queue(session: Session, values: dict[str, Any]) -> OutboxMessage:
    """A new outbox row (from `row`), in the caller's transaction."""
    message = OutboxMessage(**values)
    session.add(message)
    return message


def row(
    settings: Settings,
    *,
    key: str,
    template: str,
    to: tuple[str, str],
    language: str,
    now: datetime,
    person_id: int | None = None,
    token_id: str | None = None,
    case_id: int | None = None,
    event_id: int | None = None,
    refs: dict[str, Any] | None = None,
    bulk: bool = False,
) -> dict[str, Any]:
    """The values of a new outbox row: for `queue`, or for inserting many in one statement."""
    email, name = to
    return {
        "idempotency_key": key,
        "case_id": case_id,
        "event_id": event_id,
        "template": template,
        "to_person_id": person_id,
        "to_email": email,
        "to_name": name,
        "language": language,
        "bulk": bulk,
        "refs": dict(refs or {}),
        "link_token_id": token_id,
        # uuid4 draws from the OS: make_msgid uses the random module, which a seeded
        # process (tests, or any library that seeds it) would make repeat.
        "message_id": f"<{uuid.uuid4().hex}@{settings.from_address.rpartition('@')[2]}>",
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
        "last_error": "",
    }
