"""What the programme's work leaves behind: the audit trail of every transition, its timers,
the outbox of emails and the single-use links they carry, the coordinators' announcements, the
record of erasures, failed staff logins and the staff's sessions, the public submissions that
wait for their address's owner to confirm them, and the mail sent at a stranger's asking."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lifecycle.store.models.base import Base


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))  # None: the system
    # The actor's name when they acted ("" for the system): a later rename or a public form
    # must not change who the trail says took an earlier step. Erasure puts the pseudonym here.
    actor_name: Mapped[str] = mapped_column(String(200), server_default="")
    actor_role: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(40))
    to_state: Mapped[str] = mapped_column(String(40))
    # A reason or message typed by the staff or an applicant, or why a rule was overridden:
    # the staff read it.
    comment: Mapped[str] = mapped_column(Text, default="")
    # A reason a mentor or mentee typed on a mentoring step. Confidential (SPEC §6a): only the
    # emails to the two parties and their own exports carry it; erasure and retention empty it.
    party_text: Mapped[str] = mapped_column(Text, server_default="")
    # What the step chose, as its choice fields and effect record it, e.g. a close's
    # {"outcome": "completed"} or a vote's {"vote": "approve", "previous": None}; None: nothing.
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


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


class StaffSession(Base):
    """A staff member logged in to the console from one browser, whose cookie carries the
    session's random id. The table holds only the id's SHA-256, so that a copy of the database
    opens no session. Ending a session deletes its row (lifecycle/cases/accounts.py)."""

    __tablename__ = "staff_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # hex SHA-256 of the cookie's id
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    created_at: Mapped[datetime]
    # Written at most once a minute: reading a page should not have to wait for a write.
    last_seen_at: Mapped[datetime]
    # created_at + [web] session_max_hours, however busy the session.
    expires_at: Mapped[datetime]


class PendingSubmission(Base):
    """A request or an application sent from a public form or the public API, held until the
    owner of its address confirms it through the link mailed there (lifecycle.cases.pending).
    Nobody's row changes before that."""

    __tablename__ = "pending_submissions"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # request, application
    email: Mapped[str] = mapped_column(String(320))
    language: Mapped[str] = mapped_column(String(2))
    # What was submitted, as the service takes it; emptied once confirmed (the case holds it).
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    token_id: Mapped[str] = mapped_column(ForeignKey("action_tokens.id"), unique=True)
    confirmed_at: Mapped[datetime | None]
    # True while it waits, NULL once confirmed: the unique constraint lets one wait per address
    # and kind even when two web processes take a submission at once (NULLs never collide).
    waiting: Mapped[bool | None] = mapped_column(Boolean)

    __table_args__ = (UniqueConstraint("email", "kind", "waiting"),)


class PublicMail(Base):
    """An email sent because someone without a login asked for it (a confirmation link, a fresh
    link), counted under the address it went to and under the client that asked
    (lifecycle/web/limits.py), in the database so that every web process counts the same."""

    __tablename__ = "public_mail"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(400), index=True)  # to:… or client:…
    at: Mapped[datetime]
