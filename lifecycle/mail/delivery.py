"""The delivery worker: claim due outbox rows under a lease, render, send over SMTP, mark.

A claim is one short transaction (FOR UPDATE SKIP LOCKED on PostgreSQL; on SQLite the
BEGIN IMMEDIATE transaction makes it atomic) that stamps the rows with a claim token and
a lease, so several workers never take the same row; what is written to the rows is in
`claims`. A worker does not start a send its lease might not cover, and marks a row only
while its token still holds it. When the database refuses the mark (locked, full,
restarting), the worker stops sending, keeps the outcomes and records them before it claims
anything else. A worker that dies leaves its rows 'sending' until the lease ends; the one
window for a duplicate is a crash between the server's acceptance and the mark — at most
the messages in flight at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import aiosmtplib
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from lifecycle.bootstrap import App
from lifecycle.mail import mailer
from lifecycle.mail.claims import Claim, Outcome, Result, marks_for, take_due, write_marks
from lifecycle.store import db
from lifecycle.store.models import (
    ActionToken,
    Agreement,
    Application,
    AuditEvent,
    Case,
    MentorProfile,
    OutboxMessage,
    Person,
    Relation,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ready:
    """A claimed message, rendered and ready to send."""

    id: int
    recipient: str
    attempts: int
    content: bytes


def claim(app: App, *, limit: int) -> Claim:
    """Take up to `limit` due rows: pending ones, and those whose lease has ended."""
    token = uuid.uuid4().hex
    with app.unit() as tx:
        lease_until = tx.now + app.settings.delivery_lease
        ids = take_due(tx, token=token, lease_until=lease_until, limit=limit)
    return Claim(token, ids, lease_until)


# Messages are composed this many at a time between sends: the SMTP server works through
# the messages in flight while the next ones are composed, instead of waiting for a batch.
COMPOSE_EVERY = 10

Rendered = tuple[list[Ready], dict[int, Outcome]]  # ready to send, failed to render


def render(app: App, claimed: Claim) -> Iterator[Rendered]:
    """Compose the claimed messages a few at a time; one that cannot be rendered fails alone.

    The batch is read in one transaction and held in the session; composing needs no more
    queries as a rule, and any it needs run in a transaction of their own that ends before
    the next yield, so no lock is held while the messages are sent.
    """
    # Composing only reads: none of its transactions may take SQLite's write lock.
    reading = app.engine.execution_options(**{db.READ_ONLY: True})
    with app.sessions(bind=reading) as session:
        with session.begin():
            messages = session.scalars(
                select(OutboxMessage).where(
                    OutboxMessage.id.in_(claimed.ids), OutboxMessage.claim_token == claimed.token
                )
            ).all()
            loaded = _load_for(session, messages)  # noqa: F841 - held for the batch
        for first in range(0, len(messages), COMPOSE_EVERY):
            ready, failed = [], {}
            with session.begin():
                for message in messages[first : first + COMPOSE_EVERY]:
                    try:
                        content = mailer.compose(session, app.settings, message)
                    except Exception as error:  # one broken message must not stop the others
                        log.exception("outbox %s cannot be rendered", message.id)
                        failed[message.id] = Outcome("failed", f"cannot be rendered: {error}")
                        continue
                    ready.append(Ready(message.id, message.to_email, message.attempts, content))
            yield ready, failed


def _load_for(session: Session, messages: Sequence[OutboxMessage]) -> list[object]:
    """Load what the batch's templates read in a few queries, and hold it for the batch.

    The session's identity map keeps objects only weakly: without these references each
    message would read its case, people and token again.
    """
    case_ids = {m.case_id for m in messages if m.case_id}
    cases = session.scalars(
        select(Case)
        .where(Case.id.in_(case_ids))
        .options(
            selectinload(Case.application)
            .selectinload(Application.person)
            .selectinload(Person.profile)
            .selectinload(MentorProfile.credentials),
            selectinload(Case.application).selectinload(Application.votes),
            selectinload(Case.relation).selectinload(Relation.mentor),
            selectinload(Case.relation).selectinload(Relation.mentee),
            selectinload(Case.relation).selectinload(Relation.meetings),
            selectinload(Case.relation)
            .selectinload(Relation.agreements)
            .selectinload(Agreement.signatures),
        )
    ).all()
    tokens = session.scalars(
        select(ActionToken).where(ActionToken.id.in_({m.link_token_id for m in messages}))
    ).all()
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.id.in_({m.event_id for m in messages}))
    ).all()
    people = session.scalars(
        select(Person).where(Person.id.in_({m.to_person_id for m in messages}))
    ).all()
    return [*cases, *tokens, *events, *people]


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


def mark(app: App, claimed: Claim, results: list[Result]) -> None:
    """Record what happened to messages in one transaction, where this claim still holds them.

    Sent messages are marked together; a crash before the mark resends at most these. If
    the database refuses (its error is raised), the outcomes stay in `claimed.unrecorded`
    and go with the next mark of the claim.
    """
    claimed.unrecorded.extend(results)
    if not claimed.unrecorded:
        return
    now = app.clock()
    marks = marks_for(app.settings, now, claimed.unrecorded)
    with app.unit() as tx:
        write_marks(tx, claimed, marks, now=now)
    claimed.unrecorded.clear()
    for message_id, attempts, values in marks.changes:
        log.info(
            "outbox %s %s (attempt %s): %s",
            message_id,
            values["status"],
            attempts,
            values["last_error"],
        )
    if marks.sent:
        log.info("outbox: %s sent", len(marks.sent))


class Connection:
    """One reused SMTP connection, reopened after the server drops it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.smtp: aiosmtplib.SMTP | None = None

    async def _open(self) -> aiosmtplib.SMTP:
        settings = self.app.settings
        secure = settings.smtp_security != "none"
        smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout,
            use_tls=settings.smtp_security == "tls",
            start_tls=settings.smtp_security == "starttls",
            tls_context=ssl.create_default_context() if secure else None,
        )
        await smtp.connect()
        if settings.smtp_username:
            await smtp.login(settings.smtp_username, settings.smtp_password)
        return smtp

    async def send(self, message: Ready) -> Outcome:
        try:
            if self.smtp is None or not self.smtp.is_connected:
                self.smtp = await self._open()
            await self.smtp.sendmail(
                self.app.settings.from_address, [message.recipient], message.content
            )
        except (aiosmtplib.SMTPException, OSError, ValueError) as error:
            if not isinstance(error, aiosmtplib.SMTPResponseException):
                await self.close()  # the connection's state is unknown: start afresh
            return classify(error)
        return Outcome("sent")

    async def close(self) -> None:
        if self.smtp is not None and self.smtp.is_connected:
            try:
                await self.smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.smtp.close()
        self.smtp = None


# Outcomes are marked in groups of this many (or when the batch ends): fewer transactions,
# and a crash can resend at most the messages sent but not yet marked.
MARK_EVERY = 25


async def _drain(
    connection: Connection, claimed: Claim, queue: asyncio.Queue[Ready | None], done: list[Result]
) -> None:
    app = connection.app
    # A send (connecting, then the message) may take up to twice the SMTP timeout: never
    # start one the lease might not cover.
    last_start = claimed.lease_until.timestamp() - 2 * app.settings.smtp_timeout
    while (message := await queue.get()) is not None:
        # Nor one the database may not let us record: it refused the last mark.
        if claimed.unrecorded or app.clock().timestamp() >= last_start:
            queue.put_nowait(message)  # send_claimed gives back the unsent rest
            return
        done.append((message.id, message.attempts, await connection.send(message)))
        if len(done) >= MARK_EVERY:
            group = done[:]
            done.clear()
            mark(app, claimed, group)


async def send_claimed(
    app: App, claimed: Claim, rendered: Iterable[Rendered], connections: list[Connection]
) -> None:
    """Send messages over the connections at once as they are rendered, marking as it goes.

    Raises the database's error if it refused to read or record, once every connection has
    stopped: what was sent is then in `claimed.unrecorded`.
    """
    queue: asyncio.Queue[Ready | None] = asyncio.Queue()
    done: list[Result] = []

    async def produce() -> None:
        try:
            for ready, failed in rendered:
                if failed:
                    mark(
                        app,
                        claimed,
                        [(message_id, 0, outcome) for message_id, outcome in failed.items()],
                    )
                for message in ready:
                    queue.put_nowait(message)
                await asyncio.sleep(0)  # let the connections send what is ready
        finally:
            for _ in connections:
                queue.put_nowait(None)  # one end mark for each connection

    # Every task runs to its end: a connection stopped mid-send would forget a sent message.
    ended = await asyncio.gather(
        produce(),
        *(_drain(connection, claimed, queue, done) for connection in connections),
        return_exceptions=True,
    )
    left = [queue.get_nowait() for _ in range(queue.qsize())]
    done.extend((message.id, message.attempts, Outcome("unsent")) for message in left if message)
    mark(app, claimed, done)
    for error in ended:
        if error is not None:
            raise error


async def run(app: App, *, once: bool, stop: asyncio.Event | None = None) -> int:
    """Deliver due mail; with once, until nothing is due now. Returns how many were claimed."""
    connections = [Connection(app) for _ in range(app.settings.smtp_connections)]
    handled = 0
    claimed: Claim | None = None
    try:
        while stop is None or not stop.is_set():
            try:
                if claimed is not None:
                    mark(app, claimed, [])  # what the database refused before, first
                claimed = claim(app, limit=app.settings.delivery_batch_size)
                handled += len(claimed.ids)
                if claimed.ids:
                    await send_claimed(app, claimed, render(app, claimed), connections)
            except db.UNAVAILABLE as error:
                # Restarting, locked or full: the failed transaction rolled back; rows not
                # sent come back when their lease ends. Wait, then go on. `deliver --once`
                # gives up at once, unless it holds outcomes its lease still protects.
                keeping = (
                    claimed is not None
                    and bool(claimed.unrecorded)
                    and app.clock() < claimed.lease_until
                )
                if once and not keeping:
                    raise
                log.warning("outbox: %s; trying again", db.unavailable_reason(error))
                await _sleep(app.settings.delivery_poll_seconds, stop)
                continue
            if not claimed.ids:
                if once:
                    break
                await _sleep(app.settings.delivery_poll_seconds, stop)
    finally:
        for connection in connections:
            await connection.close()
        if claimed is not None and claimed.unrecorded:
            log.error(
                "outbox: stopped with %s outcomes the database refused to record; "
                "messages sent among them go out again when their lease ends",
                len(claimed.unrecorded),
            )
    return handled


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):  # the usual end: nobody asked us to stop
        await asyncio.wait_for(stop.wait(), timeout=seconds)
