"""Bulk mail: subscribers (double opt-in, one-click unsubscribe) and coordinators' announcements."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from lifecycle.cases.services import email_address
from lifecycle.directory.search import listed_mentors
from lifecycle.errors import InvalidInput, NotFound, Refused
from lifecycle.store.models import LANGUAGES, ActionToken, Announcement, Person, Subscriber
from lifecycle.workflows import links, outbox
from lifecycle.workflows.engine import Tx

AUDIENCES = ("mentors", "subscribers")


def subscribe(tx: Tx, *, email: str, language: str) -> Subscriber:
    """Ask to be told of intake rounds; a confirmation link must be followed first."""
    address = email_address({"email": email})
    if language not in LANGUAGES:
        raise InvalidInput("language", f"must be one of {', '.join(LANGUAGES)}")
    subscriber = tx.session.scalar(select(Subscriber).where(Subscriber.email == address))
    if subscriber is None:
        subscriber = Subscriber(email=address, language=language, created_at=tx.now)
        tx.session.add(subscriber)
    elif subscriber.confirmed_at is not None and subscriber.unsubscribed_at is None:
        return subscriber  # already subscribed: nothing to confirm
    elif confirmation_waiting(tx, email=address):
        return subscriber  # one confirmation link waits at a time: no second email
    subscriber.language, subscriber.confirmed_at, subscriber.unsubscribed_at = language, None, None
    tx.session.flush()
    token = links.issue(
        tx.session,
        links.token_row(
            tx.settings, action="confirm_subscription", now=tx.now, subscriber_id=subscriber.id
        ),
    )
    tx.session.flush()
    # Personal mail, not bulk: it goes out even to an address that once unsubscribed.
    outbox.queue(
        tx.session,
        outbox.row(
            tx.settings,
            key=f"subscribe:{subscriber.id}:{token.id}",
            template="subscription_confirm",
            to=(address, ""),
            language=language,
            now=tx.now,
            token_id=token.id,
        ),
    )
    return subscriber


def confirmation_waiting(tx: Tx, *, email: str) -> bool:
    """Whether a link to confirm a subscription waits at this address, unused and unexpired."""
    waiting = (
        select(ActionToken.id)
        .join(Subscriber, ActionToken.subscriber_id == Subscriber.id)
        .where(
            Subscriber.email == email,
            Subscriber.confirmed_at.is_(None),
            ActionToken.action == "confirm_subscription",
            ActionToken.used_at.is_(None),
            ActionToken.expires_at > tx.now,
        )
        .limit(1)
    )
    return tx.session.scalar(waiting) is not None


def confirm_subscription(tx: Tx, *, link: str) -> Subscriber:
    token = links.redeem(tx.session, tx.settings, link, now=tx.now)
    if token.action != "confirm_subscription" or token.subscriber_id is None:
        raise Refused("this link does not confirm a subscription", rule="link_invalid")
    subscriber = tx.session.get(Subscriber, token.subscriber_id)
    assert subscriber is not None
    subscriber.confirmed_at = tx.now
    return subscriber


def unsubscribe(tx: Tx, *, link: str) -> str:
    """One click: the reader gets no more bulk mail. Returns the address."""
    token = links.redeem(tx.session, tx.settings, link, now=tx.now)
    if token.action != "unsubscribe":
        raise Refused("this link does not unsubscribe", rule="link_invalid")
    if token.subscriber_id is not None:
        subscriber = tx.session.get(Subscriber, token.subscriber_id)
        assert subscriber is not None
        subscriber.unsubscribed_at = tx.now
        return subscriber.email
    person = tx.session.get(Person, token.person_id)
    assert person is not None
    person.bulk_opt_out_at = tx.now
    return person.email


def draft_announcement(
    tx: Tx, *, audience: str, author_email: str, texts: dict[str, tuple[str, str]]
) -> Announcement:
    """An announcement to preview; texts maps language to (subject, body), both languages."""
    if audience not in AUDIENCES:
        raise InvalidInput("audience", f"must be one of {', '.join(AUDIENCES)}")
    author = tx.session.scalar(select(Person).where(Person.email == author_email.lower()))
    if author is None or author.role != "coordinator":
        raise Refused("only a coordinator can send announcements", rule="role")
    for language in LANGUAGES:
        subject, body = texts.get(language, ("", ""))
        if not subject.strip() or "\n" in subject or "\r" in subject:
            raise InvalidInput(f"subject_{language}", "one line is required")
        if not body.strip():
            raise InvalidInput(f"body_{language}", "is required")
    announcement = Announcement(
        audience=audience,
        subject_et=texts["et"][0].strip(),
        body_et=texts["et"][1].strip(),
        subject_en=texts["en"][0].strip(),
        body_en=texts["en"][1].strip(),
        created_by_id=author.id,
        created_at=tx.now,
    )
    tx.session.add(announcement)
    tx.session.flush()
    return announcement


def readers(tx: Tx, announcement: Announcement) -> list[Person | Subscriber]:
    """Who would receive it now: listed mentors or confirmed subscribers, minus opt-outs."""
    if announcement.audience == "mentors":
        return [p for p, _ in listed_mentors(tx.session) if p.bulk_opt_out_at is None]
    return list(
        tx.session.scalars(
            select(Subscriber).where(
                Subscriber.confirmed_at.is_not(None), Subscriber.unsubscribed_at.is_(None)
            )
        )
    )


def send_announcement(tx: Tx, *, announcement_id: int) -> int:
    """Queue the announcement to its audience, once; returns how many were queued."""
    announcement = tx.session.get(Announcement, announcement_id, with_for_update=True)
    if announcement is None:
        raise NotFound(f"no announcement {announcement_id}")
    if announcement.sent_at is not None:
        raise Refused(f"announcement {announcement_id} was already sent", rule="sent_once")
    announcement.sent_at = tx.now
    queued = 0
    for reader in readers(tx, announcement):
        row = outbox.add_bulk(
            tx.session,
            tx.settings,
            key=f"announcement:{announcement.id}:{reader.email}",
            template="announcement",
            reader=reader,
            now=tx.now,
            refs={"announcement_id": announcement.id},
        )
        queued += row is not None
    return queued


def preview(tx: Tx, announcement: Announcement) -> dict[str, Any]:
    return {
        "id": announcement.id,
        "audience": announcement.audience,
        "readers": len(readers(tx, announcement)),
        "et": {"subject": announcement.subject_et, "body": announcement.body_et},
        "en": {"subject": announcement.subject_en, "body": announcement.body_en},
        "sent": announcement.sent_at is not None,
    }
