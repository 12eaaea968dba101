"""The outbox rows' side of delivery: which rows are due, taking them under a claim, what an
SMTP error makes of a message (`classify`), and what each message's outcome writes to its row.

A claim stamps its rows with a token and a lease; an outcome is written only where that
token still holds the row, so a row whose lease ran out belongs to the worker that took it
over. `claim` and `record` are the delivery worker's own short transactions.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import aiosmtplib
from sqlalchemy import and_, bindparam, or_, select, update

from lifecycle.bootstrap import App
from lifecycle.config import Settings
from lifecycle.store.models import OutboxMessage, table
from lifecycle.workflows.engine import Tx


@dataclass(frozen=True)
class Outcome:
    status: str  # sent, retry, failed; unsent: given back to the outbox as it was
    error: str = ""


Result = tuple[int, int, Outcome]  # message id, attempts, outcome


@dataclass(frozen=True)
class Claim:
    token: str
    ids: list[int]
    lease_until: datetime
    # Outcomes the database refused to record: a sent message left 'sending' would go out
    # again when its lease ends, so they are kept until a mark gets through.
    unrecorded: list[Result] = field(default_factory=list)


def claim(app: App, *, limit: int) -> Claim:
    """Take up to `limit` due rows: pending ones, and those whose lease has ended."""
    token = uuid.uuid4().hex
    with app.unit() as tx:
        lease_until = tx.now + app.settings.delivery_lease
        ids = take_due(tx, token=token, lease_until=lease_until, limit=limit)
    return Claim(token, ids, lease_until)


def take_due(tx: Tx, *, token: str, lease_until: datetime, limit: int) -> list[int]:
    """Stamp up to `limit` due rows with the claim: pending ones, and those whose lease has
    ended. Returns their ids."""
    due = or_(
        and_(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= tx.now),
        and_(OutboxMessage.status == "sending", OutboxMessage.lease_until <= tx.now),
    )
    ids = list(
        tx.session.scalars(
            select(OutboxMessage.id)
            .where(due)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)  # SQLite: BEGIN IMMEDIATE instead
        )
    )
    if ids:
        tx.session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(
                status="sending",
                lease_until=lease_until,
                claim_token=token,
                attempts=OutboxMessage.attempts + 1,
            )
        )
    return ids


def classify(error: BaseException) -> Outcome:
    """Temporary failures are retried; permanent ones fail the message."""
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in error.recipients]
        permanent = all(500 <= code < 600 for code in codes)
        return Outcome("failed" if permanent else "retry", str(error))
    if isinstance(error, aiosmtplib.SMTPResponseException):
        permanent = 500 <= error.code < 600
        return Outcome("failed" if permanent else "retry", f"{error.code} {error.message}")
    if isinstance(error, ValueError):  # aiosmtplib: an address it cannot send to
        return Outcome("failed", str(error))
    return Outcome("retry", f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class Marks:
    """What a group of outcomes writes: the sent rows and the rows given back, each group in
    one statement, then each other row's own values."""

    sent: list[int]
    unsent: list[int]
    changes: list[tuple[int, int, dict[str, object]]]  # message id, attempts, values

    @property
    def rows(self) -> int:
        return len(self.sent) + len(self.unsent) + len(self.changes)


def marks_for(settings: Settings, now: datetime, results: list[Result]) -> Marks:
    """A retry is due again after a backoff that doubles with each attempt, until the last
    attempt fails the message."""
    marks = Marks(sent=[], unsent=[], changes=[])
    for message_id, attempts, outcome in results:
        if outcome.status == "sent":
            marks.sent.append(message_id)
            continue
        if outcome.status == "unsent":
            marks.unsent.append(message_id)
            continue
        if outcome.status == "retry" and attempts < settings.delivery_max_attempts:
            delay = min(
                settings.delivery_backoff_base * 2 ** (attempts - 1),
                settings.delivery_backoff_max,
            )
            values: dict[str, object] = {
                "status": "pending",
                "last_error": outcome.error,
                "next_attempt_at": now + delay * random.uniform(0.5, 1.5),
            }
        else:
            values = {"status": "failed", "last_error": outcome.error}
        marks.changes.append((message_id, attempts, values))
    return marks


_OUTBOX = table(OutboxMessage)
_HELD = and_(
    _OUTBOX.c.id.in_(bindparam("ids", expanding=True)),
    _OUTBOX.c.claim_token == bindparam("held_by"),
)
_RELEASED = {"lease_until": None, "claim_token": None}
# Built once: every few messages are marked sent.
_MARK_SENT = (
    update(_OUTBOX)
    .where(_HELD)
    .values(status="sent", sent_at=bindparam("now"), last_error="", **_RELEASED)
)
# Messages a worker will not send (its lease is ending, or the database refused a mark)
# are due again at once, as if never claimed.
_GIVE_BACK = (
    update(_OUTBOX)
    .where(_HELD)
    .values(status="pending", attempts=_OUTBOX.c.attempts - 1, **_RELEASED)
)


def write_marks(tx: Tx, claimed: Claim, marks: Marks, *, now: datetime) -> None:
    """Write the marks to the rows this claim still holds, and release them."""
    connection = tx.session.connection()
    for statement, ids in ((_MARK_SENT, marks.sent), (_GIVE_BACK, marks.unsent)):
        if ids:
            connection.execute(statement, {"ids": ids, "held_by": claimed.token, "now": now})
    for message_id, _, values in marks.changes:
        connection.execute(
            update(_OUTBOX)
            .where(_OUTBOX.c.id == message_id, _OUTBOX.c.claim_token == claimed.token)
            .values(**values, **_RELEASED)
        )


def record(app: App, claims: Iterable[Claim]) -> list[tuple[Claim, Marks]]:
    """Write the claims' unrecorded outcomes in one transaction, each to the rows its claim
    still holds, and forget them; what each wrote. If the database refuses (its error is
    raised), they stay unrecorded, for the next try."""
    now = app.clock()
    marks = [(c, marks_for(app.settings, now, c.unrecorded)) for c in claims if c.unrecorded]
    if marks:
        with app.unit() as tx:
            for claimed, claim_marks in marks:
                write_marks(tx, claimed, claim_marks, now=now)
    for claimed, _ in marks:
        claimed.unrecorded.clear()
    return marks
