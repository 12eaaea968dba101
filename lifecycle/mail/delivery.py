"""The delivery worker: claim due outbox rows under a lease, render, send over SMTP, mark.

A claim is one short transaction (FOR UPDATE SKIP LOCKED on PostgreSQL; on SQLite the
BEGIN IMMEDIATE transaction makes it atomic) that stamps the rows with a claim token and
a lease, so several workers never take the same row; what is written to the rows is in
`claims`. The worker claims again as its connections run short of messages, so they never
wait for a batch to end, and holds at most `delivery_batch_size` rows at a time. It does not
start a send its lease might not cover, and marks a row only while its token still holds it.
When the database refuses the mark (locked, full, restarting), the worker stops sending,
keeps the outcomes and records them before it claims anything else. A worker that dies
leaves its rows 'sending' until the lease ends; the one window for a duplicate is a crash
between the server's acceptance and the mark — at most the messages in flight at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import aiosmtplib
from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.mail import mailer
from lifecycle.mail.claims import Claim, Outcome, Result, claim, classify, record
from lifecycle.store import db
from lifecycle.store.models import OutboxMessage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ready:
    """A claimed message, rendered and ready to send."""

    id: int
    recipient: str
    attempts: int
    content: bytes


# Messages are composed this many at a time between sends: the SMTP server works through
# the messages in flight while the next ones are composed, and an answer that arrives
# meanwhile waits no longer than four messages take to compose.
COMPOSE_EVERY = 4

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
            loaded = mailer.preload(session, messages)  # noqa: F841 - held for the batch
        for first in range(0, len(messages), COMPOSE_EVERY):
            ready, failed = [], {}
            with session.begin():
                for message in messages[first : first + COMPOSE_EVERY]:
                    try:
                        content = mailer.compose(session, app.settings, message)
                    except db.UNAVAILABLE:
                        raise  # the database, not the message: every row is due again later
                    except Exception as error:  # one broken message must not stop the others
                        log.exception("outbox %s cannot be rendered", message.id)
                        failed[message.id] = Outcome("failed", f"cannot be rendered: {error}")
                        continue
                    ready.append(Ready(message.id, message.to_email, message.attempts, content))
            yield ready, failed


def mark(app: App, claimed: Claim, results: list[Result]) -> None:
    """Record what happened to messages in one transaction, where this claim still holds them.

    Sent messages are marked together; a crash before the mark resends at most these. If
    the database refuses (its error is raised), the outcomes stay in `claimed.unrecorded`
    and go with the next mark of the claim.
    """
    mark_all(app, [(claimed, result) for result in results] or [(claimed, None)])


def mark_all(app: App, outcomes: Sequence[tuple[Claim, Result | None]]) -> dict[str, int]:
    """`mark` for the outcomes of several claims at once, in one transaction; each claim's
    refused outcomes go with it. Returns how many rows of each claim (by token) it released."""
    claims = {claimed.token: claimed for claimed, _ in outcomes}
    for claimed, result in outcomes:
        if result is not None:
            claimed.unrecorded.append(result)
    written = record(app, claims.values())
    for _, marks in written:
        for message_id, attempts, values in marks.changes:
            log.info(
                "outbox %s %s (attempt %s): %s",
                message_id,
                values["status"],
                attempts,
                values["last_error"],
            )
    if sent := sum(len(marks.sent) for _, marks in written):
        log.info("outbox: %s sent", sent)
    return {claimed.token: marks.rows for claimed, marks in written}


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


# Outcomes are marked in groups of this many (or when sending stops): fewer transactions, and
# a crash can resend at most the messages sent but not yet marked.
MARK_EVERY = 25


class _Sending:
    """Claimed messages on their way over the connections, claim after claim.

    The next claim is taken while the connections still have messages to send, so none waits
    for a batch to end, and only as large as keeps the rows the worker holds (claimed, their
    outcomes not yet recorded) within `delivery_batch_size`. The outcomes of all claims are
    marked together, MARK_EVERY at a time.
    """

    def __init__(self, app: App, connections: list[Connection]) -> None:
        self.app = app
        self.connections = connections
        self.queue: asyncio.Queue[tuple[Claim, Ready] | None] = asyncio.Queue()
        self.moved = asyncio.Event()  # a connection took a message, had an outcome or stopped
        self.draining = 0  # connections still taking messages
        self.done: list[tuple[Claim, Result]] = []
        self.claims: dict[str, Claim] = {}  # by token, while they hold rows
        self.held: dict[str, int] = {}  # the rows each holds
        self.claimed = 0  # rows claimed in all

    def refused(self) -> bool:
        """The database refused to record outcomes: nothing is sent until they are recorded."""
        return any(claimed.unrecorded for claimed in self.claims.values())

    def keeping(self) -> bool:
        """Outcomes wait to be recorded, and a lease still protects them."""
        now = self.app.clock()
        return any(c.unrecorded and now < c.lease_until for c in self.claims.values())

    def _take(self, claimed: Claim) -> None:
        self.claims[claimed.token] = claimed
        self.held[claimed.token] = len(claimed.ids)
        self.claimed += len(claimed.ids)

    def _release(self, token: str, rows: int) -> None:
        if not rows:
            return
        self.held[token] -= rows
        if not self.held[token]:
            del self.held[token], self.claims[token]

    def record(self, *, every: int = 1) -> None:
        """Mark the outcomes so far, if there are `every` of them, and those refused before."""
        if len(self.done) < every and not self.refused():
            return
        outcomes: list[tuple[Claim, Result | None]] = [*self.done]
        outcomes += [(claimed, None) for claimed in self.claims.values() if claimed.unrecorded]
        self.done.clear()  # kept in their claims' `unrecorded` if the mark is refused
        for token, rows in mark_all(self.app, outcomes).items():
            self._release(token, rows)

    async def send(
        self,
        claimed: Claim,
        rendered: Iterable[Rendered],
        *,
        more: bool,
        stop: asyncio.Event | None,
    ) -> None:
        """Send the claim's messages as they are rendered and, with `more`, those of further
        claims until none is due or `stop` is set. Raises the database's error if it refused
        to read or record, once every connection has stopped: what was sent is then in the
        claims' `unrecorded`."""
        self._take(claimed)
        self.draining = len(self.connections)
        # Every task runs to its end: a connection stopped mid-send would forget a sent message.
        ended = await asyncio.gather(
            self._produce(claimed, rendered, more=more, stop=stop),
            *(self._drain(connection) for connection in self.connections),
            return_exceptions=True,
        )
        while not self.queue.empty():
            if (item := self.queue.get_nowait()) is not None:
                unsent, message = item
                self.done.append((unsent, (message.id, message.attempts, Outcome("unsent"))))
        try:
            self.record()
        finally:
            # Rows left without an outcome (the database failed mid-claim) come back when their
            # lease ends; only outcomes the database refused are still this worker's to record.
            self.claims = {t: c for t, c in self.claims.items() if c.unrecorded}
            self.held = {t: len(c.unrecorded) for t, c in self.claims.items()}
        for error in ended:
            if error is not None:
                raise error

    async def _produce(
        self,
        claimed: Claim,
        rendered: Iterable[Rendered],
        *,
        more: bool,
        stop: asyncio.Event | None,
    ) -> None:
        try:
            while await self._enqueue(claimed, rendered) and more:
                if stop is not None and stop.is_set():
                    return
                self.record()  # the outcomes so far make room for the next claim
                while (room := self.app.settings.delivery_batch_size - sum(self.held.values())) < 1:
                    await self._until(lambda: bool(self.done))
                    if not self.draining:
                        return
                    self.record()
                claimed = claim(self.app, limit=room)
                if not claimed.ids:
                    return
                self._take(claimed)
                rendered = render(self.app, claimed)
        finally:
            for _ in self.connections:
                self.queue.put_nowait(None)  # one end mark for each connection

    async def _enqueue(self, claimed: Claim, rendered: Iterable[Rendered]) -> bool:
        """Queue the claim's messages as they are rendered; whether sending goes on."""
        unread = set(claimed.ids)
        for ready, failed in rendered:
            unread.difference_update(message.id for message in ready)
            unread.difference_update(failed)
            self.done += [
                (claimed, (message_id, 0, outcome)) for message_id, outcome in failed.items()
            ]
            for message in ready:
                self.queue.put_nowait((claimed, message))
            # Composed no further ahead than the connections need: composing holds up the
            # answers they are waiting for.
            await asyncio.sleep(0)
            await self._until(lambda: self.queue.qsize() < len(self.connections))
            if self.refused() or not self.draining:
                # The rest is given back, due again at once.
                self.done += [(claimed, (id_, 0, Outcome("unsent"))) for id_ in sorted(unread)]
                return False
        # Rows another worker took over before they were read are held no longer.
        self._release(claimed.token, len(unread))
        return True

    async def _until(self, condition: Callable[[], bool]) -> None:
        while self.draining and not condition():
            self.moved.clear()
            await self.moved.wait()

    async def _drain(self, connection: Connection) -> None:
        try:
            while (item := await self.queue.get()) is not None:
                self.moved.set()
                claimed, message = item
                # A send (connecting, then the message) may take up to twice the SMTP timeout:
                # never start one the lease might not cover, nor one the database may not let
                # us record (it refused the last mark).
                last_start = claimed.lease_until.timestamp() - 2 * self.app.settings.smtp_timeout
                if self.refused() or self.app.clock().timestamp() >= last_start:
                    outcome = Outcome("unsent")  # given back to the outbox
                else:
                    outcome = await connection.send(message)
                self.done.append((claimed, (message.id, message.attempts, outcome)))
                self.moved.set()
                if not self.refused():
                    self.record(every=MARK_EVERY)
        finally:
            self.draining -= 1
            self.moved.set()


async def send_claimed(
    app: App, claimed: Claim, rendered: Iterable[Rendered], connections: list[Connection]
) -> None:
    """Send one claim's messages over the connections as they are rendered, marking as it
    goes (see `_Sending.send`)."""
    await _Sending(app, connections).send(claimed, rendered, more=False, stop=None)


async def run(app: App, *, once: bool, stop: asyncio.Event | None = None) -> int:
    """Deliver due mail; with once, until nothing is due now. Returns how many were claimed."""
    connections = [Connection(app) for _ in range(app.settings.smtp_connections)]
    sending = _Sending(app, connections)
    try:
        while stop is None or not stop.is_set():
            try:
                sending.record()  # what the database refused before, first
                claimed = claim(app, limit=app.settings.delivery_batch_size)
                if claimed.ids:
                    await sending.send(claimed, render(app, claimed), more=True, stop=stop)
            except db.UNAVAILABLE as error:
                # Restarting, locked or full: the failed transaction rolled back; rows not
                # sent come back when their lease ends. Wait, then go on. `deliver --once`
                # gives up at once, unless it holds outcomes its lease still protects.
                if once and not sending.keeping():
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
        if sending.refused():
            log.error(
                "outbox: stopped with %s outcomes the database refused to record; "
                "messages sent among them go out again when their lease ends",
                sum(len(claimed.unrecorded) for claimed in sending.claims.values()),
            )
    return sending.claimed


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    with contextlib.suppress(TimeoutError):  # the usual end: nobody asked us to stop
        await asyncio.wait_for(stop.wait(), timeout=seconds)
