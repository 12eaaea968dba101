"""What the programme's work leaves behind: the audit trail of every transition, its timers,
the outbox of emails and the single-use links they carry, the coordinators' announcements, the
record of erasures, and failed staff logins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.store.models.base import Base


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))  # None: the system
    actor_role: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(40))
    to_state: Mapped[str] = mapped_column(String(40))
    # A reason or message typed by the actor; never confidential mentoring content.
    comment: Mapped[str] = mapped_column(Text, default="")


class Timer(Base):
    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    entry_event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"))
    state: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(60))
    due_at: Mapped[datetime]
    # pending → fired | skipped (too late, or the step was refused) | cancelled (state left)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    finished_at: Mapped[datetime | None]
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("case_id", "entry_event_id", "name", "due_at"),
        Index("ix_timers_status_due", "status", "due_at"),
    )


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The same email for the same case, state entry and reader is queued once.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    # The step that caused the email; its comment (e.g. an info request) goes into the text.
    event_id: Mapped[int | None] = mapped_column(ForeignKey("audit_events.id"))
    template: Mapped[str] = mapped_column(String(60))
    # None for a subscriber who is not a person in the programme.
    to_person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    to_email: Mapped[str] = mapped_column(String(320))
    to_name: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(2))
    # Bulk mail (announcements) carries unsubscribe headers and skips unsubscribed readers.
    bulk: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the email is about beyond the case, e.g. {"meeting_id": 4, "sequence": 1}.
    refs: Mapped[dict[str, Any]]
    link_token_id: Mapped[str | None] = mapped_column(ForeignKey("action_tokens.id"))
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    # pending → sending (claimed under a lease) → sent | failed; back to pending to retry.
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    # Which claim holds the row: a worker whose lease ran out can no longer mark it.
    claim_token: Mapped[str | None] = mapped_column(String(40))
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_outbox_status_next", "status", "next_attempt_at"),)


class ActionToken(Base):
    """What a link in an email lets one person do on one case, once, until it expires.

    The link carries the id and an HMAC of the row's fields; the row makes it single-use.
    """

    __tablename__ = "action_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    action: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Announcement(Base):
    """A one-off message from a coordinator to all listed mentors or all subscribers."""

    __tablename__ = "announcements"

    id: Mapped[int] = mapped_column(primary_key=True)
    audience: Mapped[str] = mapped_column(String(20))  # mentors, subscribers
    subject_et: Mapped[str] = mapped_column(String(200))
    body_et: Mapped[str] = mapped_column(Text)
    subject_en: Mapped[str] = mapped_column(String(200))
    body_en: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class PrivacyEvent(Base):
    """An erasure or a retention run's anonymisation, recorded without the data it removed."""

    __tablename__ = "privacy_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(20))  # erasure, retention
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    # The coordinator who asked for an erasure; None for the retention job or an operator.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    # What was removed, as counts of rows per kind: never the removed values themselves.
    counts: Mapped[dict[str, Any]]


class LoginFailure(Base):
    """A failed staff login (console or API), counted under three keys — the account and
    client together, the account, the client (lifecycle/web/auth.py) — in the database so
    that every web process counts the same failures."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(400), index=True)  # pair:…, email:… or client:…
    at: Mapped[datetime]
