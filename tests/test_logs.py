"""Logs: structlog lines (JSON or console) that never hold a confidential text or a link token.

The full-run test lists a mentor and carries a mentoring relation from the request to
feedback through the pages behind the email links (TestClient), with every email delivered
to a real aiosmtpd sink and every link followed from the delivered message; the `lifecycle`
and web loggers are captured at DEBUG, and the captured lines are searched for each
confidential text and each link token.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from lifecycle import logs
from lifecycle.bootstrap import App
from lifecycle.cli.main import main
from lifecycle.config import Settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.mail import delivery, sink
from lifecycle.schedule import jobs, scheduler
from lifecycle.store.models import ActionToken, OutboxMessage, Relation
from lifecycle.web.app import create
from lifecycle.workflows import links
from tests.conftest import COMMITTEE, COORDINATOR
from tests.processes import free_port

MENTOR, MENTEE = "liina.laas@example.org", "peeter.puu@example.org"
QUESTION = "Saladus-Q: kuidas toime tulla läbipõlemisega meeskonnas?"
INFO_ANSWER = "Saladus-I: diplomi koopia on lisatud"
GOAL = "Saladus-G: taastada meeskonna töövõime"
RHYTHM = "Saladus-R: iga kolmas esmaspäev"
FEE = "Saladus-F: tasuta, vastastikune"
NOTES = "Saladus-N: refleksioon raskest vestlusest"
PLACE = "Saladus-P: Rüütli 5"
CLOSE_REASON = "Saladus-E: eesmärk täidetud"
MENTEE_COMMENT = "Saladus-C1: mentor aitas väga"
MENTOR_COMMENT = "Saladus-C2: juhendatav oli avatud"
DECLINE_REASON = "Saladus-D: olen mentee töökaaslase sugulane"
CONFIDENTIAL = (
    QUESTION,
    INFO_ANSWER,
    GOAL,
    RHYTHM,
    FEE,
    NOTES,
    PLACE,
    CLOSE_REASON,
    MENTEE_COMMENT,
    MENTOR_COMMENT,
    DECLINE_REASON,
)
# The service's own loggers and the web server's; levels are restored after each test.
SERVICE_LOGGERS = ("lifecycle", "uvicorn", "uvicorn.access", "uvicorn.error", "fastapi")


@pytest.fixture
def captured() -> Iterator[None]:
    """Put the logging setup back as it was: logs.configure changes process-wide state."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in SERVICE_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)
    structlog.reset_defaults()


def capture(settings: Settings, *, format: str, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    logs.configure(replace(settings, log_format=format, log_level=level), stream=stream)
    return stream


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- the format ------------------------------------------------------------------------------


def test_json_format_writes_one_object_a_line_with_level_logger_and_time(
    settings: Settings, captured: None
) -> None:
    stream = capture(settings, format="json")

    logging.getLogger("lifecycle.schedule.jobs").info("timer %s fired", 12, extra={"case": "M-3"})
    structlog.get_logger("lifecycle.privacy.retention").info("retention", relations=2)

    first, second = json_lines(stream)
    assert first["event"] == "timer 12 fired" and first["case"] == "M-3"
    assert (first["level"], first["logger"]) == ("info", "lifecycle.schedule.jobs")
    assert first["timestamp"].endswith("Z")
    assert (second["event"], second["relations"]) == ("retention", 2)


def test_the_console_format_is_the_default_and_is_not_json(
    settings: Settings, captured: None
) -> None:
    assert settings.log_format == "console"
    stream = capture(settings, format=settings.log_format)

    logging.getLogger("lifecycle.mail.delivery").info("outbox: %s sent", 3)

    line = stream.getvalue().strip()
    assert "outbox: 3 sent" in line and "lifecycle.mail.delivery" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


@pytest.mark.parametrize("format", ["json", "console"])
def test_a_link_token_is_masked_in_messages_and_tracebacks_and_no_local_is_printed(
    settings: Settings, captured: None, format: str
) -> None:
    stream = capture(settings, format=format)
    link = "/l/AbC-123_xyz.0123456789abcdef0123456789abcdef"

    def fails(question: str) -> None:
        raise ValueError(f"could not follow {link}")

    logging.getLogger("uvicorn.access").info(
        '%s - "%s %s HTTP/%s" %d', "127.0.0.1:50000", "GET", link, "1.1", 303
    )
    try:
        fails(QUESTION)
    except ValueError:
        logging.getLogger("lifecycle.web").exception("a page failed")

    text = stream.getvalue()
    assert f"GET {logs.MASKED_LINK} HTTP/1.1" in text and "AbC-123_xyz" not in text
    assert f"could not follow {logs.MASKED_LINK}" in text
    assert "ValueError: could not follow" in text  # the traceback is there, without locals
    assert QUESTION not in text


def test_sql_statements_and_their_parameters_are_not_logged_even_at_debug(
    app: App, clock: ManualClock, captured: None
) -> None:
    stream = capture(app.settings, format="json", level="DEBUG")

    logging.getLogger("lifecycle.test").debug("debug is on")
    with app.unit() as tx:  # SQLAlchemy would log the statement and this parameter
        tx.session.execute(select(Relation.id).where(Relation.question == QUESTION))

    lines = json_lines(stream)
    assert [line["event"] for line in lines] == ["debug is on"]


def test_the_worker_command_logs_json_lines_when_configured(
    app: App,
    clock: ManualClock,
    captured: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock.now = clock.now.replace(year=2020)  # long ago: its timers are due on the real clock
    scenarios.submit_application(app, scenarios.applicant(MENTOR, "Liina Laas"), actor=COORDINATOR)
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", app.settings.database_url)
    monkeypatch.setenv("MENTORLUS_LOGGING__FORMAT", "json")
    monkeypatch.setenv("MENTORLUS_SMTP__PORT", str(free_port()))  # nothing listens: retried

    assert main(["--json", "worker", "--once"]) == 0

    output = capsys.readouterr()
    events = [json.loads(line) for line in output.err.splitlines()]
    assert any(
        e["logger"] == "lifecycle.schedule.jobs" and "review_overdue" in e["event"] for e in events
    )
    assert any(e["logger"] == "lifecycle.mail.delivery" for e in events)
    assert json.loads(output.out)["timers"]["fired"] >= 1


# -- a full run ------------------------------------------------------------------------------


class Mailbox:
    """The aiosmtpd sink's folder: the link in the delivered email a queued row became."""

    def __init__(self, app: App, folder: Path) -> None:
        self.app, self.folder = app, folder

    def deliver(self) -> None:
        asyncio.run(delivery.run(self.app, once=True))

    def link(self, template: str, to: str) -> str:
        self.deliver()
        with self.app.unit() as tx:
            message_id = tx.session.scalars(
                select(OutboxMessage.message_id)
                .where(OutboxMessage.template == template, OutboxMessage.to_email == to)
                .order_by(OutboxMessage.id.desc())
            ).first()
        assert message_id is not None, f"no {template} to {to}"
        for path in self.folder.glob("*.eml"):
            mail = message_from_bytes(path.read_bytes(), policy=policy.default)
            if mail["Message-ID"] == message_id:
                text = mail.get_body(("plain",))
                assert text is not None
                found = re.search(r"https?://\S+(/l/\S+)", text.get_content())
                assert found, f"no link in {template}"
                return found.group(1)
        raise AssertionError(f"{template} to {to} was not delivered")


def act(browser: TestClient, link_or_page: str, trigger: str, **fields: Any) -> None:
    """Follow a link (or open a page this browser holds), then send one step's form."""
    page = link_or_page
    if page.startswith("/l/"):
        followed = browser.get(page, follow_redirects=False)
        assert followed.status_code == 303, followed.text
        page = followed.headers["location"]
    html = browser.get(page).text
    data = {
        "csrf": _hidden(html, "csrf"),
        "trigger": trigger,
        "version": _hidden(html, "version"),
        **{f"f_{name}": str(value) for name, value in fields.items()},
    }
    response = browser.post(page, data=data, follow_redirects=False)
    assert response.status_code == 303, response.text


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden {name}"
    return found.group(1)


def local(app: App, clock: ManualClock, **delta: float) -> str:
    return (
        (clock.now + timedelta(**delta))
        .astimezone(app.settings.time_zone)
        .strftime("%Y-%m-%dT%H:%M")
    )


def test_a_full_run_logs_no_confidential_text_and_no_link_token(
    app: App, clock: ManualClock, captured: None, tmp_path: Path
) -> None:
    controller = sink.start(tmp_path / "mail", host="127.0.0.1", port=free_port(), echo=False)
    app.settings = replace(app.settings, smtp_port=controller.port, smtp_timeout=5)
    stream = capture(app.settings, format="json")
    for name in SERVICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    mail = Mailbox(app, tmp_path / "mail")
    mentor, mentee = TestClient(create(app)), TestClient(create(app))
    try:
        # The mentor applies; the coordinator asks for more; the answer comes from the link.
        ref = scenarios.submit_application(
            app, scenarios.applicant(MENTOR, "Liina Laas"), actor=COORDINATOR
        )
        scenarios.step(app, ref, "begin_review", COORDINATOR)
        scenarios.step(app, ref, "request_info", COORDINATOR, message="Palun diplomit.")
        act(mentor, mail.link("info_requested", MENTOR), "provide_info", message=INFO_ANSWER)
        for kind in ("degree", "experience", "credential"):
            scenarios.step(app, ref, "verify_evidence", COORDINATOR, kind=kind)
        scenarios.step(app, ref, "mark_eligible", COORDINATOR)
        interview_at = clock.now + timedelta(days=5)
        scenarios.step(
            app,
            ref,
            "schedule_interview",
            COORDINATOR,
            interview_at=interview_at,
            place="Tallinn",
            committee=COMMITTEE,
        )
        clock.now = interview_at + timedelta(hours=2)
        for member in COMMITTEE:
            scenarios.step(app, ref, "record_vote", member, vote="approve", notes="")
        scenarios.step(app, ref, "approve", COORDINATOR)

        # The relation, every step from the email links.
        data = scenarios.mentee(MENTEE, "Peeter Puu", MENTOR, question=QUESTION)
        relation = scenarios.submit_request(app, data)
        act(mentor, mail.link("request_received", MENTOR), "accept")
        act(
            mentor,
            mail.link("request_accepted", MENTOR),
            "schedule_meeting",
            starts_at=local(app, clock, days=2),
            place=PLACE,
        )
        clock.advance(days=3)
        scheduler.run_due_now(app)  # "do you go on?"
        act(mentor, mail.link("go_on_question", MENTOR), "proceed")
        act(mentee, mail.link("go_on_question", MENTEE), "proceed")
        start = clock.now.astimezone(app.settings.time_zone).date()
        act(
            mentee,
            mail.link("agreement_invitation", MENTEE),
            "draft_agreement",
            question=QUESTION,
            goal=GOAL,
            starts_on=start.isoformat(),
            ends_on=(start + timedelta(days=200)).isoformat(),
            meeting_rhythm=RHYTHM,
            fee=FEE,
            confidentiality="true",
        )
        act(mentor, mail.link("agreement_invitation", MENTOR), "sign")
        act(mentee, f"/act/{relation}/agreement", "sign")
        clock.advance(days=31)
        jobs.fire_due_timers(app)  # the monthly check-in, with a link to log a meeting
        check_in = mail.link("monthly_check_in", MENTEE)
        act(mentee, check_in, "log_meeting", starts_at=local(app, clock, hours=-2), notes=NOTES)
        act(TestClient(create(app)), mail.link("monthly_check_in", MENTOR), "close",
            outcome="completed", reason=CLOSE_REASON)  # fmt: skip
        act(mentee, mail.link("feedback_request", MENTEE), "give_feedback", rating=5,
            comment=MENTEE_COMMENT)  # fmt: skip
        act(mentor, mail.link("feedback_request", MENTOR), "give_feedback", rating=4,
            comment=MENTOR_COMMENT)  # fmt: skip
        # Another request, declined with a reason that the mentee's email quotes.
        scenarios.submit_request(app, data)
        act(mentor, mail.link("request_received", MENTOR), "decline", reason=DECLINE_REASON)
        clock.advance(days=1)
        scheduler.run_due_now(app)
        mail.deliver()
    finally:
        controller.stop()

    with app.unit() as tx:
        states = tx.session.scalars(select(Relation).order_by(Relation.id)).first()
        assert states is not None
        assert (states.case.ref, states.case.state, states.outcome) == (
            relation,
            "closed",
            "completed",
        )
        tokens = list(tx.session.scalars(select(ActionToken.id)))
        unsent = tx.session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.status != "sent")
        ).all()
    assert unsent == [] and len(tokens) > 10
    lines = json_lines(stream)
    loggers = {line["logger"] for line in lines}
    assert {"lifecycle.schedule.jobs", "lifecycle.mail.delivery"} <= loggers  # the capture works
    text = stream.getvalue()
    assert [secret for secret in CONFIDENTIAL if secret in text] == []
    assert [token for token in tokens if token in text] == []


def test_the_web_servers_access_log_masks_the_token_of_a_followed_link(
    app: App, clock: ManualClock, captured: None
) -> None:
    ref = scenarios.submit_application(
        app, scenarios.applicant(MENTOR, "Liina Laas"), actor=COORDINATOR
    )
    scenarios.step(app, ref, "begin_review", COORDINATOR)
    scenarios.step(app, ref, "request_info", COORDINATOR, message="Palun diplomit.")
    with app.unit() as tx:
        token = tx.session.scalars(select(ActionToken)).first()
        assert token is not None
        link = links.url(token, app.settings)[len(app.settings.base_url) :]
    stream = capture(app.settings, format="json")
    port = free_port()
    # As `mentorlus serve` runs it: uvicorn's records go to our handler (log_config=None).
    server = uvicorn.Server(
        uvicorn.Config(create(app), host="127.0.0.1", port=port, log_config=None, log_level="info")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        response = httpx.get(f"http://127.0.0.1:{port}{link}", follow_redirects=False)
    finally:
        server.should_exit = True
        thread.join(timeout=20)

    assert response.status_code == 303
    access = [line for line in json_lines(stream) if line["logger"] == "uvicorn.access"]
    assert len(access) == 1 and f"GET {logs.MASKED_LINK} HTTP/1.1" in access[0]["event"]
    assert token.id not in stream.getvalue()


def test_a_database_errors_text_does_not_carry_the_confidential_question(app: App) -> None:
    with pytest.raises(IntegrityError) as error, app.unit() as tx:
        tx.session.add(
            Relation(
                case_id=999_999,
                mentor_id=999_999,
                mentee_id=999_999,
                topic="career",
                question=QUESTION,
                mentee_is_manager=False,
                mentee_organisation="",
                requested_at=tx.now,
            )
        )
        tx.session.flush()

    assert QUESTION not in str(error.value)
