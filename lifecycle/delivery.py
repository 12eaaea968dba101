"""The delivery worker: claim due outbox rows under a lease, render, send over SMTP, mark.

A claim is one short transaction (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: BEGIN
IMMEDIATE makes it atomic), so several workers never take the same row. A worker that dies
leaves its rows 'sending'; when their lease ends another worker takes them again. The one
window for a duplicate is a crash between the server's acceptance and our mark: at most the
messages in flight at that moment (one per connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from dataclasses import dataclass

import aiosmtplib
from sqlalchemy import and_, or_, select, update

from lifecycle import mailer
from lifecycle.bootstrap import App
from lifecycle.models import OutboxMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    status: str  # sent, retry, failed
    error: str = ""


def claim(app: App, *, limit: int) -> list[int]:
    """Take up to `limit` due rows for this worker: pending ones, and those whose lease ended."""
    with app.unit() as tx:
        now = tx.now
        due = or_(
            and_(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now),
            and_(OutboxMessage.status == "sending", OutboxMessage.lease_until <= now),
        )
        query = (
            select(OutboxMessage.id)
            .where(due)
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
        )
        query = query.with_for_update(skip_locked=True)  # SQLite: BEGIN IMMEDIATE instead
        ids = list(tx.session.scalars(query))
        if ids:
            tx.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(
                    status="sending",
                    lease_until=now + app.settings.delivery_lease,
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
        return Outcome(
            "failed" if 500 <= error.code < 600 else "retry", f"{error.code} {error.message}"
        )
    if isinstance(error, ValueError):  # aiosmtplib: an address it cannot send to
        return Outcome("failed", str(error))
    return Outcome("retry", f"{type(error).__name__}: {error}")


def mark(app: App, message_id: int, outcome: Outcome) -> None:
    """Record what happened to one claimed message."""
    with app.unit() as tx:
        message = tx.session.get(OutboxMessage, message_id)
        if message is None or message.status != "sending":
            return
        settings = app.settings
        if outcome.status == "sent":
            message.status, message.sent_at, message.last_error = "sent", tx.now, ""
        elif outcome.status == "retry" and message.attempts < settings.delivery_max_attempts:
            delay = min(
                settings.delivery_backoff_base * 2 ** (message.attempts - 1),
                settings.delivery_backoff_max,
            )
            message.status = "pending"
            message.next_attempt_at = tx.now + delay * random.uniform(0.5, 1.5)
            message.last_error = outcome.error
        else:
            message.status, message.last_error = "failed", outcome.error
        message.lease_until = None
    log.info("outbox %s %s (attempt %s)", message_id, outcome.status, message.attempts)


class Connection:
    """One reused SMTP connection, reopened after the server drops it."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.smtp: aiosmtplib.SMTP | None = None

    async def _open(self) -> aiosmtplib.SMTP:
        settings = self.app.settings
        smtp = aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            timeout=settings.smtp_timeout,
            use_tls=settings.smtp_security == "tls",
            start_tls=settings.smtp_security == "starttls",
            tls_context=ssl.create_default_context() if settings.smtp_security != "none" else None,
        )
        await smtp.connect()
        if settings.smtp_username:
            await smtp.login(settings.smtp_username, settings.smtp_password)
        return smtp

    async def send(self, message_id: int) -> Outcome:
        try:
            with self.app.unit() as tx:
                message = tx.session.get(OutboxMessage, message_id)
                assert message is not None
                mail = mailer.compose(tx.session, self.app.settings, message)
                sender, recipient = self.app.settings.from_address, message.to_email
        except Exception as error:  # one message that cannot be rendered must not stop the rest
            log.exception("outbox %s cannot be rendered", message_id)
            return Outcome("failed", f"cannot be rendered: {type(error).__name__}: {error}")
        try:
            if self.smtp is None or not self.smtp.is_connected:
                self.smtp = await self._open()
            await self.smtp.send_message(mail, sender=sender, recipients=[recipient])
        except (aiosmtplib.SMTPException, OSError, ValueError) as error:
            outcome = classify(error)
            if not isinstance(error, aiosmtplib.SMTPResponseException):
                await self.close()  # the connection's state is unknown: start afresh
            return outcome
        return Outcome("sent")

    async def close(self) -> None:
        if self.smtp is not None and self.smtp.is_connected:
            try:
                await self.smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.smtp.close()
        self.smtp = None


async def _drain(connection: Connection, queue: asyncio.Queue[int]) -> None:
    while not queue.empty():
        message_id = queue.get_nowait()
        mark(connection.app, message_id, await connection.send(message_id))


async def run(app: App, *, once: bool, stop: asyncio.Event | None = None) -> int:
    """Deliver due mail; with once, until nothing is due now. Returns how many were handled."""
    connections = [Connection(app) for _ in range(app.settings.smtp_connections)]
    handled = 0
    try:
        while stop is None or not stop.is_set():
            ids = claim(app, limit=app.settings.delivery_batch_size)
            if not ids:
                if once:
                    break
                await _sleep(app.settings.delivery_poll_seconds, stop)
                continue
            queue: asyncio.Queue[int] = asyncio.Queue()
            for message_id in ids:
                queue.put_nowait(message_id)
            await asyncio.gather(*(_drain(connection, queue) for connection in connections))
            handled += len(ids)
    finally:
        for connection in connections:
            await connection.close()
    return handled


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):  # the usual end: nobody asked us to stop
        await asyncio.wait_for(stop.wait(), timeout=seconds)
