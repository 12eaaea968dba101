"""Delivery against a real SMTP server on loopback: what arrives, and what happens on faults.

An aiosmtpd server runs in a thread of the test process (`sink` fixture). Its handler keeps
every message it accepts and can be told to answer the next messages with a reply (421, 451,
550) or to drop the connection after the message data, before its answer, so the client
sees the server vanish in the middle of DATA. Emails are created by real workflow steps
(lifecycle.scenarios); the worker is `delivery.run` in the test process, or `mentorlus
worker` subprocesses for the crash and the two-worker tests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from aiosmtpd.controller import Controller
from hypothesis import strategies as st
from icalendar import Calendar
from markupsafe import escape
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cli.main import main
from lifecycle.config import Settings, load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import InvalidInput
from lifecycle.mail import delivery, emails, mailer
from lifecycle.mail.sink import subject_of
from lifecycle.store.models import Application, OutboxMessage, Person, Relation
from lifecycle.workflows import outbox
from lifecycle.workflows.engine import load_case
from tests.conftest import (
    COMMITTEE,
    COORDINATOR,
    another_connection,
    bring,
    list_mentor,
    wait_briefly_for_locks,
    write_lock_held,
)
from tests.processes import free_port, wait_until

MENTOR = "tonu.ounapuu@example.org"
MENTOR_NAME = "Tõnu Õunapuu"
MENTEE = "juri.aarma@example.org"
MENTEE_NAME = "Jüri Ärm"
WORKER = Path(sys.executable).parent / "mentorlus"
DROP = "drop the connection"
SIGNATURE = {"et": "Parimate soovidega", "en": "Kind regards"}


# -- the SMTP server -------------------------------------------------------------------------


class Sink:
    """aiosmtpd handler: keeps each accepted message; can be told how to treat the next ones."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.port = 0
        self.on_accept: Callable[[int], None] | None = None  # told how many have arrived
        self._faults: list[tuple[str, str]] = []  # (stage, reply or DROP), one per message
        self._lock = threading.Lock()

    def fail_next(self, count: int, reply: str, *, stage: str = "DATA") -> None:
        """Answer the next `count` messages with `reply` at RCPT or DATA (or DROP there)."""
        with self._lock:
            self._faults.extend([(stage, reply)] * count)

    def _fault(self, stage: str) -> str | None:
        with self._lock:
            if self._faults and self._faults[0][0] == stage:
                return self._faults.pop(0)[1]
        return None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        reply = self._fault("RCPT")
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = self._fault("DATA")
        if reply == DROP:
            # The data has been read but not answered: the client sees the connection end
            # (SMTPServerDisconnected) and the message is lost, as when a server crashes.
            server.transport.close()
            return "421 4.3.0 gone"  # never reaches the client
        if reply is not None:
            return reply
        self.received.append(bytes(envelope.original_content or envelope.content))
        if self.on_accept is not None:
            self.on_accept(len(self.received))
        return "250 2.0.0 OK"

    def messages(self) -> list[EmailMessage]:
        parsed = []
        for content in list(self.received):
            mail = message_from_bytes(content, policy=policy.default)
            assert isinstance(mail, EmailMessage)
            parsed.append(mail)
        return parsed

    def message_ids(self) -> Counter[str]:
        return Counter(str(mail["Message-ID"]) for mail in self.messages())


@pytest.fixture
def sink() -> Iterator[Sink]:
    handler = Sink()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


@pytest.fixture
def settings(settings: Settings, sink: Sink) -> Settings:
    """The conftest settings, sending to the sink over two connections."""
    return replace(
        settings,
        smtp_port=sink.port,
        smtp_timeout=5,
        smtp_connections=2,
        delivery_backoff_base=timedelta(seconds=60),
    )


# -- helpers ---------------------------------------------------------------------------------


def deliver(app: App) -> int:
    """One `outbox deliver --once`: send what is due now; returns how many were handled."""
    return asyncio.run(delivery.run(app, once=True))


def outbox_rows(app: App, **where: Any) -> list[OutboxMessage]:
    with app.unit() as tx:
        return list(
            tx.session.scalars(select(OutboxMessage).filter_by(**where).order_by(OutboxMessage.id))
        )


def row(app: App, message_id: int) -> OutboxMessage:
    with app.unit() as tx:
        found = tx.session.get(OutboxMessage, message_id)
        assert found is not None
        return found


def request_mentor(app: App, **overrides: Any) -> str:
    return scenarios.submit_request(app, scenarios.mentee(MENTEE, MENTEE_NAME, MENTOR, **overrides))


def submitted_application(app: App, email: str, name: str, **overrides: Any) -> int:
    """A submitted application; returns the id of its application_received row."""
    ref = scenarios.submit_application(
        app, scenarios.applicant(email, name, **overrides), actor=COORDINATOR
    )
    with app.unit() as tx:
        case, _ = load_case(tx, ref)
        message_id = tx.session.scalar(
            select(OutboxMessage.id).where(
                OutboxMessage.case_id == case.id,
                OutboxMessage.template == "application_received",
            )
        )
        assert message_id is not None
        return message_id


def parts(mail: EmailMessage) -> list[EmailMessage]:
    found = []
    for part in mail.iter_parts():
        assert isinstance(part, EmailMessage)  # policy.default parses into EmailMessage
        found.append(part)
    return found


def text_of(mail: EmailMessage, subtype: str) -> str:
    part = next(p for p in parts(mail) if p.get_content_type() == f"text/{subtype}")
    content: str = part.get_content()
    return content


def by_message_id(sink: Sink) -> dict[str, EmailMessage]:
    return {str(mail["Message-ID"]): mail for mail in sink.messages()}


def invitation(mail: EmailMessage) -> tuple[str, Calendar]:
    """The calendar part's `method` parameter and its parsed VCALENDAR."""
    part = next(p for p in parts(mail) if p.get_content_type() == "text/calendar")
    return str(part.get_param("method")), Calendar.from_ical(part.get_content())


def event_of(calendar: Calendar) -> Any:
    events = calendar.walk("VEVENT")
    assert len(events) == 1
    return events[0]


def assert_well_formed(mail: EmailMessage, message: OutboxMessage, settings: Settings) -> None:
    """The headers and the text-then-HTML structure every email has."""
    assert mail.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in parts(mail)]
    assert kinds[:2] == ["text/plain", "text/html"]
    assert kinds[2:] in ([], ["text/calendar"])
    assert [p.get_content_charset() for p in parts(mail)[:2]] == ["utf-8", "utf-8"]
    sender = mail["From"].addresses[0]
    assert (sender.display_name, sender.addr_spec) == (
        settings.programme_name,
        settings.from_address,
    )
    reader = mail["To"].addresses[0]
    assert (reader.display_name, reader.addr_spec) == (message.to_name, message.to_email)
    assert mail["Message-ID"] == message.message_id
    assert mail["Date"].datetime == message.created_at
    assert mail["Auto-Submitted"] == "auto-generated"
    subject = str(mail["Subject"])
    assert subject.strip() and "\n" not in subject and "\r" not in subject
    text, html = text_of(mail, "plain"), text_of(mail, "html")
    assert message.to_name in text and SIGNATURE[message.language] in text
    assert str(escape(message.to_name)) in html
    assert f'<html lang="{message.language}">' in html
    assert f"<title>{escape(subject)}</title>" in html


def worker_env(database_url: str, sink: Sink, *, lease_seconds: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MENTORLUS_")}
    env.update(
        MENTORLUS_DATABASE__URL=database_url,
        MENTORLUS_SMTP__PORT=str(sink.port),
        MENTORLUS_SMTP__CONNECTIONS="4",
        MENTORLUS_DELIVERY__LEASE_SECONDS=str(lease_seconds),
        # The lease must outlast two SMTP timeouts; a local sink answers in milliseconds.
        MENTORLUS_SMTP__TIMEOUT_SECONDS=str(lease_seconds / 3),
        MENTORLUS_DELIVERY__BATCH_SIZE="50",
        MENTORLUS_DELIVERY__POLL_SECONDS="0.2",
    )
    if secret := os.environ.get("MENTORLUS_SECRET_KEY"):
        env["MENTORLUS_SECRET_KEY"] = secret
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [str(WORKER), "worker"], env=env, stdout=output, stderr=subprocess.STDOUT
        )


def stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def queue_bulk(app: App, count: int, *, people: int = 3) -> None:
    """`count` more application_received rows for a few real applicants, in one transaction."""
    cases = []
    for index in range(people):
        ref = scenarios.submit_application(
            app,
            scenarios.applicant(f"kandidaat{index}@example.org", f"Kandidaat Õie {index}"),
            actor=COORDINATOR,
        )
        with app.unit() as tx:
            case, application = load_case(tx, ref)
            assert isinstance(application, Application)
            cases.append((case.id, application.person))
    with app.unit() as tx:
        for index in range(count):
            case_id, person = cases[index % people]
            outbox.add(
                tx.session,
                app.settings,
                key=f"bulk:{index}",
                template="application_received",
                person=tx.session.merge(person),
                now=tx.now,
                case_id=case_id,
            )


def all_message_ids(app: App) -> set[str]:
    return {message.message_id for message in outbox_rows(app)}


def count_status(app: App) -> dict[str, int]:
    with app.unit() as tx:
        return dict(
            tx.session.execute(
                select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
            ).all()
        )


# -- what arrives ----------------------------------------------------------------------------


def test_every_email_of_a_whole_mentoring_story_arrives_once_as_text_then_html_with_its_headers(
    app: App, clock: ManualClock, sink: Sink
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    ref = request_mentor(app)
    scenarios.bring_relation(app, clock, ref, "closed", mentor=MENTOR, mentee_email=MENTEE)
    queued = outbox_rows(app)

    assert deliver(app) == len(queued)

    assert {message.status for message in outbox_rows(app)} == {"sent"}
    assert sink.message_ids() == Counter(message.message_id for message in queued)
    arrived = by_message_id(sink)
    for message in queued:
        assert_well_formed(arrived[message.message_id], message, app.settings)
    assert {message.template for message in queued} >= {
        "application_received",
        "application_eligible",
        "interview_scheduled",
        "listed_welcome",
        "request_received",
        "request_sent",
        "request_accepted",
        "meeting_scheduled",
        "agreement_invitation",
        "agreement_drafted",
        "agreement_signed",
        "feedback_request",
    }
    welcome = next(m for m in queued if m.template == "listed_welcome")
    assert arrived[welcome.message_id]["Subject"] == "Tere tulemast ESTA mentorite andmebaasi!"


def test_a_request_reaches_each_reader_in_their_language_the_mentor_with_a_signed_link(
    app: App, clock: ManualClock, sink: Sink
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)  # an Estonian reader
    request_mentor(app, language="en")
    deliver(app)
    arrived = by_message_id(sink)

    (received,) = outbox_rows(app, template="request_received")
    mail = arrived[received.message_id]
    assert mail["Subject"] == "Uus mentorluse pöördumine: karjäärieesmärgid ja eneseareng"
    text, html = text_of(mail, "plain"), text_of(mail, "html")
    assert f"Tere, {MENTOR_NAME}!" in text
    assert f"{MENTEE_NAME} soovib sinult mentorlust." in text
    assert "Teema: karjäärieesmärgid ja eneseareng" in text
    assert MENTOR_NAME in html and "Eesti Sotsiaaltöö Assotsiatsiooni" in html
    (link,) = re.findall(r"https?://\S+", text)
    assert app.settings.base_url.startswith("http://")
    assert link.startswith(f"{app.settings.base_url}/l/")
    token = link.removeprefix(f"{app.settings.base_url}/l/").partition(".")[0]
    assert token == received.link_token_id
    assert f'href="{link}"' in html

    (sent,) = outbox_rows(app, template="request_sent")
    assert sent.language == "en"
    mail = arrived[sent.message_id]
    assert mail["Subject"] == "Your request has been sent to the mentor"
    text = text_of(mail, "plain")
    assert f"Dear {MENTEE_NAME}," in text
    assert f"Mentor: {MENTOR_NAME}" in text
    assert "Topic: career goals and self-development" in text
    assert "Kind regards" in text and "Parimate" not in text
    assert '<html lang="en">' in text_of(mail, "html")


def test_an_interview_invitation_keeps_its_uid_and_raises_the_sequence_when_it_moves(
    app: App, clock: ManualClock, sink: Sink
) -> None:
    ref = scenarios.submit_application(
        app, scenarios.applicant(MENTOR, MENTOR_NAME), actor=COORDINATOR
    )
    bring(app, clock, ref, "interview", MENTOR)
    deliver(app)
    uids = set()
    for sequence, at in enumerate(
        [datetime(2026, 9, 20, 11, 0, tzinfo=UTC), datetime(2026, 9, 22, 12, 30, tzinfo=UTC)]
    ):
        scenarios.step(
            app,
            ref,
            "schedule_interview",
            COORDINATOR,
            interview_at=at,
            place="Tallinn, Lastekodu 12",
            committee=COMMITTEE,
        )
        assert deliver(app) == 4  # the applicant and the three committee members
        arrived = by_message_id(sink)
        invitations = outbox_rows(app, template="interview_scheduled")[sequence * 4 :]
        assert sorted(m.to_email for m in invitations) == sorted([MENTOR, *COMMITTEE])
        for message in invitations:
            mail = arrived[message.message_id]
            assert_well_formed(mail, message, app.settings)
            method, calendar = invitation(mail)
            event = event_of(calendar)
            assert (method, str(calendar["METHOD"])) == ("REQUEST", "REQUEST")
            assert int(event["SEQUENCE"]) == sequence
            assert event.decoded("DTSTART") == at
            assert str(mail["Subject"]).startswith(
                "Vestluse aeg muutus" if sequence else "Vestlus hindamiskomisjoniga"
            )
            attendees = {str(a).removeprefix("mailto:") for a in event.get("ATTENDEE")}
            assert attendees == {MENTOR, *COMMITTEE}
            uids.add(str(event["UID"]))
    assert len(uids) == 1 and uids.pop().startswith("interview-")


def test_a_meeting_invitation_is_updated_with_the_same_uid_and_cancelled_with_method_cancel(
    app: App, clock: ManualClock, sink: Sink
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    ref = request_mentor(app)
    scenarios.bring_relation(app, clock, ref, "first_meeting", mentor=MENTOR, mentee_email=MENTEE)
    deliver(app)
    starts_at = clock.now + timedelta(days=5)
    moved_to = starts_at + timedelta(days=2, hours=3)

    def sent_now(template: str) -> list[tuple[str, Any]]:
        """Deliver; the (method, event) of each `template` email that arrived for both."""
        assert deliver(app) == 2  # mentor and mentee
        arrived = by_message_id(sink)
        found = []
        for message in outbox_rows(app, template=template, status="sent")[-2:]:
            mail = arrived[message.message_id]
            assert_well_formed(mail, message, app.settings)
            method, calendar = invitation(mail)
            assert method == str(calendar["METHOD"])
            found.append((method, event_of(calendar)))
        assert sorted(m.to_email for m in outbox_rows(app, template=template)[-2:]) == sorted(
            [MENTOR, MENTEE]
        )
        return found

    scenarios.step(app, ref, "schedule_meeting", MENTOR, starts_at=starts_at, place="videokõne")
    with app.unit() as tx:
        _, relation = load_case(tx, ref)
        assert isinstance(relation, Relation)
        (meeting_id,) = [meeting.id for meeting in relation.meetings]
    uid = f"meeting-{meeting_id}@example.org"
    for method, event in sent_now("meeting_scheduled"):
        assert (method, str(event["UID"]), int(event["SEQUENCE"])) == ("REQUEST", uid, 0)
        assert event.decoded("DTSTART") == starts_at
        assert str(event["LOCATION"]) == "videokõne"

    scenarios.step(
        app, ref, "move_meeting", MENTEE, meeting=meeting_id, starts_at=moved_to, place="Pärnu"
    )
    for method, event in sent_now("meeting_scheduled"):
        assert (method, str(event["UID"]), int(event["SEQUENCE"])) == ("REQUEST", uid, 1)
        assert event.decoded("DTSTART") == moved_to
        assert str(event["LOCATION"]) == "Pärnu"

    scenarios.step(app, ref, "cancel_meeting", MENTOR, meeting=meeting_id, reason="haigus")
    for method, event in sent_now("meeting_cancelled"):
        assert (method, str(event["UID"]), int(event["SEQUENCE"])) == ("CANCEL", uid, 2)
        assert str(event["STATUS"]) == "CANCELLED"
    assert sink.message_ids() == Counter({m.message_id: 1 for m in outbox_rows(app)})


# -- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", ["421 4.3.2 try later", "451 4.3.0 local error in processing"])
def test_a_temporary_refusal_is_retried_with_back_off_and_delivered_once_the_server_recovers(
    app: App, clock: ManualClock, sink: Sink, reply: str
) -> None:
    message_id = submitted_application(app, MENTOR, MENTOR_NAME)
    sink.fail_next(2, reply)
    base = app.settings.delivery_backoff_base

    for attempt in (1, 2):
        assert deliver(app) == 1
        waiting = row(app, message_id)
        assert (waiting.status, waiting.attempts) == ("pending", attempt)
        assert waiting.last_error.startswith(reply[:3])
        delay = waiting.next_attempt_at - clock.now
        assert base * 2 ** (attempt - 1) * 0.5 <= delay <= base * 2 ** (attempt - 1) * 1.5
        assert deliver(app) == 0  # not due before its back-off ends
        clock.now = waiting.next_attempt_at + timedelta(seconds=1)
    assert sink.received == []

    assert deliver(app) == 1
    sent = row(app, message_id)
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 3, "")
    assert sent.sent_at == clock.now
    assert sink.message_ids() == Counter({sent.message_id: 1})


def test_a_permanent_refusal_fails_the_message_which_is_never_retried_until_a_coordinator_asks(
    app: App,
    clock: ManualClock,
    sink: Sink,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refused = submitted_application(app, MENTOR, MENTOR_NAME)
    sink.fail_next(1, "550 5.1.1 no such user", stage="RCPT")
    assert deliver(app) == 1
    accepted = submitted_application(app, MENTEE, MENTEE_NAME)
    assert deliver(app) == 1

    failed = row(app, refused)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert "550" in failed.last_error and "no such user" in failed.last_error
    for _ in range(3):
        clock.advance(days=30)
        assert deliver(app) == 0
    assert row(app, refused).status == "failed"
    assert sink.message_ids() == Counter({row(app, accepted).message_id: 1})

    monkeypatch.setenv("MENTORLUS_DATABASE__URL", database_url)
    assert main(["--json", "outbox", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(m["id"], m["status"]) for m in listed] == [(refused, "failed"), (accepted, "sent")]
    assert "550" in listed[0]["last_error"]
    assert main(["--json", "outbox", "list", "--status", "failed"]) == 0
    assert [m["id"] for m in json.loads(capsys.readouterr().out)] == [refused]

    assert main(["--json", "outbox", "retry", str(refused)]) == 0
    assert json.loads(capsys.readouterr().out) == {"id": refused, "status": "pending"}
    assert row(app, refused).attempts == 0
    clock.now = max(clock.now, datetime.now(UTC)) + timedelta(minutes=1)
    assert deliver(app) == 1
    assert row(app, refused).status == "sent"
    assert sink.message_ids()[row(app, refused).message_id] == 1


def test_a_connection_dropped_in_the_middle_of_data_is_delivered_later_exactly_once(
    app: App, clock: ManualClock, sink: Sink
) -> None:
    app.settings = replace(app.settings, smtp_connections=1)
    ids = [
        submitted_application(app, f"kandidaat{index}@example.org", f"Kandidaat Õie {index}")
        for index in range(3)
    ]
    sink.fail_next(1, DROP)

    assert deliver(app) == 3
    dropped = row(app, ids[0])
    assert (dropped.status, dropped.attempts) == ("pending", 1)
    assert "SMTPServerDisconnected" in dropped.last_error
    # The one connection was opened again for the other two.
    assert [row(app, i).status for i in ids[1:]] == ["sent", "sent"]

    clock.now = dropped.next_attempt_at + timedelta(seconds=1)
    assert deliver(app) == 1
    assert (row(app, ids[0]).status, row(app, ids[0]).attempts) == ("sent", 2)
    assert sink.message_ids() == Counter({row(app, i).message_id: 1 for i in ids})


# -- header safety and the outbox key --------------------------------------------------------


@pytest.mark.parametrize("name", ["Mari\r\nBcc: x@evil.example", "Mari\nMaasikas", "Mari\x00"])
def test_a_name_with_a_line_break_or_control_character_cannot_be_entered(
    app: App, name: str
) -> None:
    with pytest.raises(InvalidInput) as applying:
        scenarios.submit_application(app, scenarios.applicant(MENTOR, name), actor=COORDINATOR)
    assert applying.value.field == "name"
    submitted_application(app, MENTOR, MENTOR_NAME)  # someone to ask
    with pytest.raises(InvalidInput) as requesting:
        scenarios.submit_request(app, scenarios.mentee(MENTEE, name, MENTOR))
    assert requesting.value.field == "name"
    with app.unit() as tx:
        assert tx.session.scalar(select(Person).where(Person.email == MENTEE)) is None


def test_a_subject_is_one_line_whatever_the_data_so_no_header_can_be_injected(
    app: App, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = emails.sample_context()
    evil["meeting"]["at"] = "15.03.2027 10:00\r\nBcc: x@evil.example"
    env = emails.environment(app.settings.templates_dir, "et")
    subject, text = emails.render(env, "meeting_scheduled", evil)
    assert subject == "Kohtumise aeg muutus: 15.03.2027 10:00 Bcc: x@evil.example"
    assert "\r\nBcc: x@evil.example" in text  # in the body, where it is harmless

    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    ref = request_mentor(app)
    scenarios.bring_relation(app, clock, ref, "first_meeting", mentor=MENTOR, mentee_email=MENTEE)
    scenarios.step(
        app, ref, "schedule_meeting", MENTOR, starts_at=clock.now + timedelta(days=3), place="x"
    )
    (message, *_) = outbox_rows(app, template="meeting_scheduled")
    monkeypatch.setattr(emails, "context_for", lambda *_: evil)
    with app.unit() as tx:
        composed = mailer.compose(
            tx.session, app.settings, tx.session.get(OutboxMessage, message.id)
        )
    mail = message_from_bytes(composed, policy=policy.default)
    assert "Bcc" not in mail
    assert mail["Subject"] == subject
    assert [name for name, _ in mail.items()].count("Subject") == 1


PRINTABLE = st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"])


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(st.text(alphabet=PRINTABLE, max_size=200))
def test_any_subject_survives_header_encoding_in_lines_short_enough_for_smtp(text: str) -> None:
    subject = " ".join(text.split())
    composed = mailer.build(
        sender=("Mentorlus", "mentorlus@example.org"),
        recipient=("Mari", "mari@example.org"),
        subject=subject,
        text="x",
        html="x",
        message_id="<1@example.org>",
        date=datetime(2026, 9, 20, 11, 0, tzinfo=UTC),
    )
    lines = composed.split(b"\r\nMIME-Version")[0].split(b"\r\n")
    # Encoded words keep to the recommended 78; plain ASCII only to SMTP's hard 998.
    assert all(len(line) <= (998 if subject.isascii() else 78) for line in lines)
    assert message_from_bytes(composed, policy=policy.default)["Subject"] == subject
    assert subject_of(composed) == subject  # what the local sink prints for it


def test_a_reader_name_with_a_line_break_in_the_outbox_fails_the_message_instead_of_injecting(
    app: App, sink: Sink
) -> None:
    message_id = submitted_application(app, MENTOR, MENTOR_NAME)
    with app.unit() as tx:
        poisoned = tx.session.get(OutboxMessage, message_id)
        assert poisoned is not None
        poisoned.to_name = "Mari\r\nBcc: x@evil.example"  # written around the services

    assert deliver(app) == 1
    failed = row(app, message_id)
    assert failed.status == "failed" and "cannot be rendered" in failed.last_error
    assert sink.received == []


def test_a_database_failing_while_a_message_is_composed_leaves_it_to_be_sent_later(
    app: App, clock: ManualClock, sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    message_id = submitted_application(app, MENTOR, MENTOR_NAME)
    compose = mailer.compose

    def database_gone(*args: Any, **kwargs: Any) -> bytes:
        raise OperationalError("SELECT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(mailer, "compose", database_gone)
    with pytest.raises(OperationalError):
        deliver(app)
    assert row(app, message_id).status == "sending"  # not failed: the message is sound

    monkeypatch.setattr(mailer, "compose", compose)
    clock.now += app.settings.delivery_lease + timedelta(seconds=1)
    assert deliver(app) == 1
    assert row(app, message_id).status == "sent"
    assert len(sink.received) == 1


def test_the_same_idempotency_key_cannot_be_queued_twice_and_the_transaction_rolls_back(
    app: App,
) -> None:
    with pytest.raises(IntegrityError), app.unit() as tx:
        coordinator = tx.session.scalar(select(Person).where(Person.email == COORDINATOR))
        assert coordinator is not None
        for _ in range(2):
            outbox.add(
                tx.session,
                app.settings,
                key="reminder:1:7",
                template="review_reminder",
                person=coordinator,
                now=tx.now,
            )
        tx.session.flush()
    assert outbox_rows(app, idempotency_key="reminder:1:7") == []


# -- worker processes ------------------------------------------------------------------------


def test_a_worker_claims_again_before_its_connections_run_dry_yet_holds_at_most_a_batch(
    app: App, clock: ManualClock, sink: Sink
) -> None:
    queue_bulk(app, 40)
    small = bootstrap.build(replace(app.settings, delivery_batch_size=10), clock=clock)
    held: list[dict[str, int]] = []  # rows 'sending' by claim, as each message is accepted

    def rows_held(arrived: int) -> None:  # before the 250: the row is still the worker's
        with small.read() as tx:
            query = select(OutboxMessage.claim_token, func.count()).group_by(
                OutboxMessage.claim_token
            )
            rows = tx.session.execute(query.where(OutboxMessage.status == "sending")).all()
        held.append({token: count for token, count in rows})

    sink.on_accept = rows_held
    try:
        assert deliver(small) == 43
    finally:
        small.engine.dispose()
    assert count_status(app) == {"sent": 43}
    assert sink.message_ids() == Counter({message_id: 1 for message_id in all_message_ids(app)})
    assert max(sum(claims.values()) for claims in held) <= 10
    # The next claim was taken while messages of the one before were still being sent.
    assert any(len(claims) > 1 for claims in held)


def test_a_worker_killed_mid_batch_loses_nothing_and_resends_at_most_what_was_in_flight(
    sqlite_template: Path, tmp_path: Path, sink: Sink
) -> None:
    path = tmp_path / "killed.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    app = bootstrap.build(replace(load_settings(environ={}), database_url=url))
    scenarios.add_staff(app, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    queue_bulk(app, 1000)
    expected = all_message_ids(app)
    assert len(expected) == 1003  # the bulk and each applicant's own application_received
    env = worker_env(url, sink, lease_seconds=2)
    log = tmp_path / "worker.log"

    first = start_worker(env, log)
    try:
        wait_until(lambda: len(sink.received) >= 333, timeout=60, what="a third of the mail")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
    arrived_at_kill = len(sink.received)
    in_flight = count_status(app).get("sending", 0)
    assert arrived_at_kill < len(expected), "the worker finished before it was killed"
    assert in_flight <= app.settings.delivery_batch_size == 50  # one claimed batch at most

    second = start_worker(env, log)
    try:
        wait_until(
            lambda: set(count_status(app)) == {"sent"}, timeout=120, what="all sent", every=0.5
        )
    finally:
        stop(second)
    received = sink.message_ids()
    assert set(received) == all_message_ids(app) == expected  # none missing, nothing else
    duplicates = sum(copies - 1 for copies in received.values())
    assert duplicates <= in_flight, (duplicates, in_flight, arrived_at_kill)
    app.engine.dispose()


@pytest.fixture
def impatient_app(sqlite_template: Path, tmp_path: Path, sink: Sink) -> Iterator[App]:
    """An app on a SQLite file of its own, on the real clock, with a 6 s lease, whose
    connections wait briefly for another's write lock; its staff and a hundred queued
    emails."""
    path = tmp_path / "locked.db"
    shutil.copyfile(sqlite_template, path)
    settings = replace(
        load_settings(environ={}),
        database_url=f"sqlite:///{path}",
        smtp_port=sink.port,
        smtp_connections=2,
        smtp_timeout=1,
        delivery_lease=timedelta(seconds=6),
        delivery_poll_seconds=0.2,
    )
    built = bootstrap.build(settings)
    wait_briefly_for_locks(built)
    scenarios.add_staff(built, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    queue_bulk(built, 100)
    yield built
    built.engine.dispose()


def test_composing_takes_no_write_lock_so_it_goes_on_while_another_process_writes(
    impatient_app: App,
) -> None:
    app = impatient_app
    claimed = delivery.claim(app, limit=50)
    with write_lock_held(app):
        rendered = list(delivery.render(app, claimed))
    assert sum(len(ready) for ready, _ in rendered) == 50
    assert all(not failed for _, failed in rendered)


@pytest.mark.parametrize(
    ("mode", "locked_seconds"),
    [("worker", 8.0), ("deliver --once", 1.5)],
)
def test_a_database_locked_while_a_batch_is_sent_sends_each_message_once_it_records_later(
    impatient_app: App,
    sink: Sink,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    locked_seconds: float,
) -> None:
    """Another process locks the database after the 10th message arrives: the worker's marks
    are refused while the SMTP server has accepted the messages. Held past the lease (the
    long-running worker) or within it (`deliver --once`), none may go out twice."""
    app = impatient_app
    expected = all_message_ids(app)
    locker = another_connection(app)
    locked = threading.Event()

    def lock_after_the_tenth(arrived: int) -> None:
        if arrived == 10:
            locker.execute("BEGIN EXCLUSIVE")
            locked.set()
            threading.Timer(locked_seconds, lambda: locker.execute("ROLLBACK")).start()

    sink.on_accept = lock_after_the_tenth
    caplog.set_level(logging.INFO, logger="lifecycle.mail.delivery")

    def all_sent() -> bool:  # a read takes no lock: it runs while the lock is held
        with app.read() as tx:
            return set(tx.session.scalars(select(OutboxMessage.status).distinct())) == {"sent"}

    async def worker_until_all_sent() -> None:
        stop = asyncio.Event()
        worker = asyncio.create_task(delivery.run(app, once=False, stop=stop))
        for _ in range(300):
            if all_sent():
                break
            await asyncio.sleep(0.1)
        stop.set()
        await worker

    try:
        if mode == "worker":
            asyncio.run(worker_until_all_sent())
        else:
            deliver(app)
    finally:
        locker.close()
    assert locked.is_set()
    assert "the database is locked by another process; trying again" in caplog.text
    assert count_status(app) == {"sent": len(expected)}
    assert sink.message_ids() == Counter({message_id: 1 for message_id in expected})


def test_two_workers_on_postgresql_never_send_a_message_twice(
    app: App, clock: ManualClock, sink: Sink, backend: str, database_url: str, tmp_path: Path
) -> None:
    if backend != "postgres":
        pytest.skip("several workers at once is a PostgreSQL deployment")
    clock.now = datetime.now(UTC) - timedelta(minutes=1)
    queue_bulk(app, 500)
    # The default lease: a live worker's batch must not be taken over (see the next test).
    env = worker_env(database_url, sink, lease_seconds=300)
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]

    workers = [start_worker(env, log) for log in logs]
    try:
        wait_until(
            lambda: set(count_status(app)) == {"sent"}, timeout=120, what="all sent", every=0.5
        )
    finally:
        for worker in workers:
            stop(worker)
    expected = all_message_ids(app)
    assert len(expected) >= 503
    assert sink.message_ids() == Counter({message_id: 1 for message_id in expected})
    # Each worker logs "outbox: N sent" per group of outcomes it marked.
    sent_by = [
        sum(int(n) for n in re.findall(r"outbox: (\d+) sent", log.read_text())) for log in logs
    ]
    assert sum(sent_by) == len(expected)
    assert all(sent_by), f"both workers should have sent some: {sent_by}"


def test_a_worker_whose_lease_ran_out_mid_batch_does_not_send_rows_another_worker_took_over(
    app: App, clock: ManualClock, sink: Sink
) -> None:
    ids = [
        submitted_application(app, f"kandidaat{index}@example.org", f"Kandidaat Õie {index}")
        for index in range(3)
    ]
    claimed = delivery.claim(app, limit=50)  # worker A takes the batch ...
    assert sorted(claimed.ids) == ids
    rendered = list(delivery.render(app, claimed))
    assert [failed for _, failed in rendered] == [{}]
    assert len(rendered[0][0]) == 3
    clock.advance(seconds=app.settings.delivery_lease.total_seconds() + 1)  # ... and stalls
    assert deliver(app) == 3  # worker B takes the rows over after the lease and sends them

    async def worker_a_goes_on() -> None:  # what delivery.run does with its claimed batch
        connection = delivery.Connection(app)
        try:
            await delivery.send_claimed(app, claimed, rendered, [connection])
        finally:
            await connection.close()

    asyncio.run(worker_a_goes_on())
    # A late mark by worker A (its send was under way when the lease ended) changes nothing.
    delivery.mark(app, claimed, [(ids[0], 1, delivery.Outcome("retry", "421 late"))])
    assert row(app, ids[0]).status == "sent"
    assert sink.message_ids() == Counter({row(app, i).message_id: 1 for i in ids})
