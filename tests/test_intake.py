"""Intake rounds, subscribers and announcements: the schedule, each round's mail once, links.

Service tests run on both backends (the `app` fixture); the round's whole life runs against
the real SMTP sink (lifecycle.sink) on loopback; the command line runs on a SQLite file made
by `mentorlus init`. Time is moved with the clock, never slept.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cli.main import main
from lifecycle.config import Settings, load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import InvalidInput, Refused
from lifecycle.mail import bulk, delivery
from lifecycle.mail.sink import start as start_sink
from lifecycle.schedule import intake
from lifecycle.store.models import (
    APPLICATION,
    ActionToken,
    Announcement,
    Application,
    IntakeRound,
    OutboxMessage,
    Subscriber,
)
from lifecycle.workflows import links
from lifecycle.workflows.engine import load_case
from lifecycle.workflows.rounds import current_round
from tests.conftest import COMMITTEE, COORDINATOR, START, list_mentor
from tests.processes import free_port

ZONE = ZoneInfo("Europe/Tallinn")
AUGUST = datetime(2026, 8, 10, 12, 0, tzinfo=UTC)
SECOND_COORDINATOR = "mari.mets@esta.example"
CONFIRMED = "kaia.kask@example.org"
UNCONFIRMED = "urmas.uba@example.org"
LEAVER = "lea.lahk@example.org"
PAST_APPLICANT = "priit.paju@example.org"
TEXTS = {
    "et": ("Koostööseminar 12. mail", "Kutsume kõiki mentoreid seminarile."),
    "en": ("Cooperation seminar on 12 May", "We invite all mentors to the seminar."),
}


def local(year: int, month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    """A Tallinn wall-clock time, as the UTC instant the clock shows."""
    return datetime(year, month, day, hour, minute, tzinfo=ZONE).astimezone(UTC)


# -- helpers ---------------------------------------------------------------------------------


def rounds(app: App) -> list[IntakeRound]:
    with app.unit() as tx:
        return list(tx.session.scalars(select(IntakeRound).order_by(IntakeRound.opens_at)))


def outbox_rows(app: App, template: str) -> list[OutboxMessage]:
    with app.unit() as tx:
        return list(
            tx.session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.template == template)
                .order_by(OutboxMessage.id)
            )
        )


def readers_of(app: App, template: str) -> list[str]:
    return sorted(row.to_email for row in outbox_rows(app, template))


def link_of(app: App, row: OutboxMessage) -> str:
    """The link text of an outbox row's token: the part of its URL after '/l/'."""
    with app.unit() as tx:
        token = tx.session.get(ActionToken, row.link_token_id)
        assert token is not None
        url = links.url(token, app.settings)
    assert url.startswith(f"{app.settings.base_url}/l/")
    return url.partition("/l/")[2]


def confirm_link(app: App, email: str) -> str:
    """The link in the newest confirmation email to this address."""
    return link_of(
        app, [r for r in outbox_rows(app, "subscription_confirm") if r.to_email == email][-1]
    )


def subscribe(app: App, email: str, language: str = "et") -> None:
    with app.unit() as tx:
        bulk.subscribe(tx, email=email, language=language)


def confirm(app: App, link: str) -> None:
    with app.unit() as tx:
        bulk.confirm_subscription(tx, link=link)


def unsubscribe(app: App, link: str) -> str:
    with app.unit() as tx:
        return bulk.unsubscribe(tx, link=link)


def subscriber(app: App, email: str) -> Subscriber:
    with app.unit() as tx:
        found = tx.session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert found is not None
        return found


def draft(app: App, audience: str, author: str = COORDINATOR, **texts: Any) -> dict[str, Any]:
    """Draft an announcement; returns its preview."""
    with app.unit() as tx:
        announcement = bulk.draft_announcement(
            tx, audience=audience, author_email=author, texts=texts or dict(TEXTS)
        )
        return bulk.preview(tx, announcement)


def send(app: App, announcement_id: int) -> int:
    with app.unit() as tx:
        return bulk.send_announcement(tx, announcement_id=announcement_id)


def announcement_rows(app: App, announcement_id: int) -> list[OutboxMessage]:
    return [
        row
        for row in outbox_rows(app, "announcement")
        if row.refs.get("announcement_id") == announcement_id
    ]


def run_round_mail(app: App) -> dict[str, int]:
    with app.unit() as tx:
        return intake.run_round_mail(tx)


def restart_and_run_round_mail(settings: Settings, clock: ManualClock) -> dict[str, int]:
    """A worker started afresh (new app, new engine) that runs the round job once."""
    fresh = bootstrap.build(settings, clock=clock)
    try:
        return run_round_mail(fresh)
    finally:
        fresh.engine.dispose()


def apply(app: App, email: str, name: str, *, actor: str | None = None, **extra: Any) -> str:
    return scenarios.submit_application(app, scenarios.applicant(email, name, **extra), actor=actor)


def application_round(app: App, ref: str) -> int | None:
    with app.unit() as tx:
        case, _ = load_case(tx, ref)
        found = tx.session.scalar(select(Application).where(Application.case_id == case.id))
        assert found is not None
        return found.intake_round_id


def deliver(app: App) -> int:
    return asyncio.run(delivery.run(app, once=True))


def received(folder: Path) -> list[EmailMessage]:
    mails = []
    for path in sorted(folder.glob("*.eml")):
        mail = message_from_bytes(path.read_bytes(), policy=policy.default)
        assert isinstance(mail, EmailMessage)
        mails.append(mail)
    return mails


def plain_text(mail: EmailMessage) -> str:
    body = mail.get_body(preferencelist=("plain",))
    assert body is not None
    text: str = body.get_content()
    return text


def addressed_to(mails: list[EmailMessage], email: str) -> list[EmailMessage]:
    return [mail for mail in mails if email in str(mail["To"])]


# -- the schedule ----------------------------------------------------------------------------


def test_in_august_the_schedule_creates_autumn_and_spring_rounds_opening_at_nine_local_once(
    app: App, clock: ManualClock
) -> None:
    clock.now = AUGUST
    with app.unit() as tx:
        created = intake.ensure_rounds(tx)
    assert len(created) == 2

    autumn, spring = rounds(app)
    assert (autumn.name, spring.name) == ("Sügisvoor 2026", "Kevadvoor 2027")
    assert autumn.opens_at.astimezone(ZONE) == datetime(2026, 9, 1, 9, 0, tzinfo=ZONE)
    assert spring.opens_at.astimezone(ZONE) == datetime(2027, 3, 1, 9, 0, tzinfo=ZONE)
    # Summer time in September, winter time in March: 09:00 local is 06:00 and 07:00 UTC.
    assert (autumn.opens_at.astimezone(UTC).hour, spring.opens_at.astimezone(UTC).hour) == (6, 7)
    length = app.settings.intake_length.days
    for round_ in (autumn, spring):
        opens, closes = round_.opens_at.astimezone(ZONE), round_.closes_at.astimezone(ZONE)
        assert closes.date() - opens.date() == timedelta(days=length)
        assert (opens.hour, closes.hour) == (9, 9)
    # The spring round spans the change to summer time (28 March 2027): 09:00 local both ends.
    assert spring.closes_at.astimezone(ZONE) == datetime(2027, 3, 31, 9, 0, tzinfo=ZONE)

    with app.unit() as tx:
        assert intake.ensure_rounds(tx) == []
    assert len(rounds(app)) == 2


def test_a_service_started_in_the_middle_of_a_round_creates_that_round_open(
    app: App, clock: ManualClock
) -> None:
    clock.now = datetime(2026, 9, 15, 12, 0, tzinfo=ZONE).astimezone(UTC)
    with app.unit() as tx:
        intake.ensure_rounds(tx)
        assert current_round(tx.session, tx.now) is not None
        assert current_round(tx.session, tx.now).name == "Sügisvoor 2026"


def test_a_cancelled_or_moved_scheduled_round_is_not_created_again(
    app: App, clock: ManualClock
) -> None:
    clock.now = AUGUST
    with app.unit() as tx:
        intake.ensure_rounds(tx)
    autumn, spring = rounds(app)
    with app.unit() as tx:
        intake.cancel_round(tx, round_id=autumn.id)
        intake.move_round(
            tx, round_id=spring.id, opens="2027-03-15T09:00", closes="2027-04-15T09:00"
        )

    for _ in range(2):
        clock.advance(days=3)
        with app.unit() as tx:
            assert intake.ensure_rounds(tx) == []
    assert [(r.id, r.cancelled_at is not None) for r in rounds(app)] == [
        (autumn.id, True),
        (spring.id, False),
    ]
    assert rounds(app)[1].opens_at.astimezone(ZONE) == datetime(2027, 3, 15, 9, 0, tzinfo=ZONE)


# -- coordinators' changes -------------------------------------------------------------------


@pytest.mark.parametrize("closes", ["2026-11-01T09:00", "2026-11-02T09:00"])
def test_a_round_that_closes_before_or_when_it_opens_is_refused_naming_closes(
    app: App, clock: ManualClock, closes: str
) -> None:
    clock.now = AUGUST
    with pytest.raises(InvalidInput) as refused, app.unit() as tx:
        intake.create_round(tx, name="Lisavoor", opens="2026-11-02T09:00", closes=closes)
    assert refused.value.field == "closes"
    assert rounds(app) == []


def test_a_coordinator_creates_moves_and_cancels_a_round(app: App, clock: ManualClock) -> None:
    clock.now = AUGUST
    with app.unit() as tx:
        created = intake.create_round(
            tx, name="Lisavoor", opens="2026-11-02T09:00", closes="2026-11-16T17:00"
        )
    with app.unit() as tx:
        listed = {row["id"]: row for row in intake.list_rounds(tx)}
    assert listed[created.id] == {
        "id": created.id,
        "name": "Lisavoor",
        "opens": "2026-11-02T09:00+02:00",
        "closes": "2026-11-16T17:00+02:00",
        "status": "upcoming",
        "applications": 0,
    }

    with app.unit() as tx:
        intake.move_round(
            tx, round_id=created.id, opens="2026-11-09T09:00", closes="2026-11-23T17:00"
        )
    (moved,) = rounds(app)
    assert moved.opens_at.astimezone(ZONE) == datetime(2026, 11, 9, 9, 0, tzinfo=ZONE)
    assert moved.closes_at.astimezone(ZONE) == datetime(2026, 11, 23, 17, 0, tzinfo=ZONE)

    with app.unit() as tx:
        intake.cancel_round(tx, round_id=created.id)
    with app.unit() as tx:
        assert [row["status"] for row in intake.list_rounds(tx)] == ["cancelled"]
    with pytest.raises(Refused) as refused, app.unit() as tx:
        intake.move_round(
            tx, round_id=created.id, opens="2026-11-10T09:00", closes="2026-11-24T17:00"
        )
    assert refused.value.rule == "round_cancelled"

    # A cancelled round never opens: no announcement, and no application is taken in it.
    clock.now = local(2026, 11, 10)
    with app.unit() as tx:
        assert current_round(tx.session, tx.now) is None
    run_round_mail(app)
    assert outbox_rows(app, "round_opened") == []


def test_once_a_round_is_announced_only_its_closing_can_move(app: App, clock: ManualClock) -> None:
    clock.now = AUGUST
    with app.unit() as tx:
        intake.ensure_rounds(tx)
    autumn = rounds(app)[0]
    clock.now = local(2026, 9, 1)
    assert run_round_mail(app)["announced"] == 1

    with pytest.raises(Refused) as refused, app.unit() as tx:
        intake.move_round(
            tx, round_id=autumn.id, opens="2026-09-08T09:00", closes="2026-10-08T09:00"
        )
    assert refused.value.rule == "round_announced"
    with app.unit() as tx:
        intake.move_round(
            tx, round_id=autumn.id, opens="2026-09-01T09:00", closes="2026-10-08T09:00"
        )
    moved = rounds(app)[0]
    assert moved.opens_at.astimezone(ZONE) == datetime(2026, 9, 1, 9, 0, tzinfo=ZONE)
    assert moved.closes_at.astimezone(ZONE) == datetime(2026, 10, 8, 9, 0, tzinfo=ZONE)


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """A SQLite file made by `mentorlus init`, with a coordinator; the CLI reads the env."""
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", url)
    assert main(["init"]) == 0
    app = bootstrap.build(load_settings(), clock=ManualClock(START))
    scenarios.add_staff(app, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    for email in COMMITTEE:
        scenarios.add_staff(app, name=email, email=email, role="committee")
    yield app
    app.engine.dispose()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """Run `mentorlus --json ...`; returns (exit code, parsed stdout or None, stderr)."""
    code = main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_a_coordinator_creates_moves_and_cancels_a_round_from_the_command_line(
    cli_database: App, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(
        capsys,
        "intake",
        "create",
        "--name",
        "Lisavoor",
        "--opens",
        "2031-05-05T09:00",
        "--closes",
        "2031-05-04T09:00",
    )
    assert code == 1 and err.startswith("invalid input: closes")

    code, created, _ = cli(
        capsys,
        "intake",
        "create",
        "--name",
        "Lisavoor",
        "--opens",
        "2031-05-05T09:00",
        "--closes",
        "2031-06-04T17:00",
    )
    assert code == 0 and created["name"] == "Lisavoor"
    round_id = str(created["id"])

    code, moved, _ = cli(
        capsys,
        "intake",
        "move",
        round_id,
        "--opens",
        "2031-05-12T09:00",
        "--closes",
        "2031-06-11T17:00",
    )
    assert code == 0 and moved["id"] == created["id"]
    code, listed, _ = cli(capsys, "intake", "list")
    assert code == 0
    ours = next(row for row in listed if row["id"] == created["id"])
    assert (ours["opens"], ours["closes"], ours["status"]) == (
        "2031-05-12T09:00+03:00",
        "2031-06-11T17:00+03:00",
        "upcoming",
    )
    # `intake list` also made the schedule's coming rounds, each opening at 09:00 local.
    scheduled = [row for row in listed if row["id"] != created["id"]]
    assert scheduled and all(row["opens"][11:16] == "09:00" for row in scheduled)

    code, cancelled, _ = cli(capsys, "intake", "cancel", round_id)
    assert (code, cancelled["status"]) == (0, "cancelled")
    code, listed, _ = cli(capsys, "intake", "list")
    assert next(row for row in listed if row["id"] == created["id"])["status"] == "cancelled"
    code, _, err = cli(
        capsys,
        "intake",
        "move",
        round_id,
        "--opens",
        "2031-05-19T09:00",
        "--closes",
        "2031-06-18T17:00",
    )
    assert code == 1 and err.startswith("refused (round_cancelled)")


# -- a round's whole life, through the real SMTP sink ----------------------------------------


@pytest.fixture
def mail_folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """lifecycle.sink on a free loopback port; yields (folder of .eml files, port)."""
    folder = tmp_path / "mail"
    port = free_port()
    controller = start_sink(folder, host="127.0.0.1", port=port, echo=False)
    yield folder, port
    controller.stop()


def test_an_intake_round_announces_reminds_and_summarises_each_once_through_restarts(
    app: App, clock: ManualClock, mail_folder: tuple[Path, int]
) -> None:
    folder, port = mail_folder
    app = replace(app, settings=replace(app.settings, smtp_port=port, smtp_timeout=5))
    settings = app.settings
    clock.now = AUGUST
    scenarios.add_staff(app, name="Mari Mets", email=SECOND_COORDINATOR, role="coordinator")

    def again() -> dict[str, int]:
        """The round job in two freshly started workers: the second must find nothing to do."""
        done = restart_and_run_round_mail(settings, clock)
        assert restart_and_run_round_mail(settings, clock) == {
            "announced": 0,
            "reminded": 0,
            "summarized": 0,
        }
        return done

    # August: three subscribers and a past applicant who asked to be told of rounds.
    for email in (CONFIRMED, UNCONFIRMED, LEAVER):
        subscribe(app, email)
    apply(app, PAST_APPLICANT, "Priit Paju", actor=COORDINATOR, notify_rounds=True)
    assert again() == {"announced": 0, "reminded": 0, "summarized": 0}
    deliver(app)
    for email in (CONFIRMED, LEAVER):
        (confirmation,) = addressed_to(received(folder), email)
        found = re.search(re.escape(settings.base_url) + r"/l/(\S+)", plain_text(confirmation))
        assert found, plain_text(confirmation)
        confirm(app, found.group(1))
    # The leaver follows the one-click link of an announcement to subscribers.
    announcement_id = draft(app, "subscribers")["id"]
    assert send(app, announcement_id) == 2
    deliver(app)
    (to_leaver,) = [
        mail for mail in addressed_to(received(folder), LEAVER) if mail["List-Unsubscribe"]
    ]
    unsubscribe_url = str(to_leaver["List-Unsubscribe"]).strip("<>")
    assert unsubscribe(app, unsubscribe_url.partition("/l/")[2]) == LEAVER
    # Before the round opens, the public form names its dates.
    with pytest.raises(Refused) as early:
        apply(app, "ene.ehin@example.org", "Ene Ehin")
    assert early.value.rule == "intake_round_open"
    assert "01.09.2026" in early.value.reason and "01.10.2026" in early.value.reason

    autumn = rounds(app)[0]
    clock.now = local(2026, 9, 1, 8, 59)
    assert again() == {"announced": 0, "reminded": 0, "summarized": 0}
    assert outbox_rows(app, "round_opened") == []

    # Opening: the confirmed subscriber and the past applicant, nobody else.
    clock.now = local(2026, 9, 1)
    assert again() == {"announced": 1, "reminded": 0, "summarized": 0}
    assert readers_of(app, "round_opened") == sorted([CONFIRMED, PAST_APPLICANT])
    deliver(app)
    opened = [mail for mail in received(folder) if mail["Subject"].startswith("Mentoriks saab")]
    assert sorted(str(mail["To"]) for mail in opened) == sorted(
        [CONFIRMED, f"Priit Paju <{PAST_APPLICANT}>"]
    )
    for mail in opened:
        header = str(mail["List-Unsubscribe"])
        assert re.fullmatch(r"<https?://[^>\s]+>", header), header
        assert header[1:-1].startswith(f"{settings.base_url}/l/")
        assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    # Inside the round the public form takes applications, and they belong to the round.
    inside = apply(app, "ene.ehin@example.org", "Ene Ehin")
    clock.advance(days=2)
    withdrawn = apply(app, "olev.org@example.org", "Olev Org")
    scenarios.step(app, withdrawn, "withdraw", "olev.org@example.org")
    assert application_round(app, inside) == application_round(app, withdrawn) == autumn.id

    # Seven days before the close: the reminder, once, to the same readers.
    clock.now = local(2026, 9, 24, 8, 59)
    assert again()["reminded"] == 0
    clock.now = local(2026, 9, 24)
    assert again() == {"announced": 0, "reminded": 1, "summarized": 0}
    assert readers_of(app, "round_closing") == sorted([CONFIRMED, PAST_APPLICANT])

    # The close: a summary to each coordinator with what the round received, by state.
    clock.now = local(2026, 10, 1, 8, 59)
    assert again()["summarized"] == 0
    clock.now = local(2026, 10, 1)
    assert again() == {"announced": 0, "reminded": 0, "summarized": 1}
    summaries = outbox_rows(app, "round_summary")
    assert sorted(row.to_email for row in summaries) == sorted([COORDINATOR, SECOND_COORDINATOR])
    states = app.workflows[APPLICATION].states
    expected = {
        states["submitted"].label["et"]: 1,
        states["withdrawn"].label["et"]: 1,
    }
    for row in summaries:
        assert {item["label"]["et"]: item["count"] for item in row.refs["counts"]} == expected
    deliver(app)
    mails = received(folder)
    for email in (COORDINATOR, SECOND_COORDINATOR):
        (summary,) = [m for m in addressed_to(mails, email) if "lõppenud" in m["Subject"]]
        text = plain_text(summary)
        for label, count in expected.items():
            assert f"{label}: {count}" in text, text

    # After the close the form names the next round; a coordinator may still enter one.
    with pytest.raises(Refused) as late:
        apply(app, "tiit.tamm@example.org", "Tiit Tamm")
    assert late.value.rule == "intake_round_open"
    assert "01.03.2027" in late.value.reason and "31.03.2027" in late.value.reason
    entered = apply(app, "tiit.tamm@example.org", "Tiit Tamm", actor=COORDINATOR)
    assert application_round(app, entered) is None

    # Nothing about the round went out twice, and every queued message was sent.
    templates = ("round_opened", "round_closing", "round_summary")
    per_reader = Counter(
        (row.template, row.to_email) for template in templates for row in outbox_rows(app, template)
    )
    assert len(per_reader) == 6 and set(per_reader.values()) == {1}
    deliver(app)
    with app.unit() as tx:
        statuses = set(tx.session.scalars(select(OutboxMessage.status)))
    assert statuses == {"sent"}
    counted = Counter(str(mail["Message-ID"]) for mail in received(folder))
    assert set(counted.values()) == {1}
    assert len(addressed_to(received(folder), UNCONFIRMED)) == 1  # its confirmation request


# -- subscribers' links ----------------------------------------------------------------------


def test_a_confirmation_link_works_once(app: App) -> None:
    subscribe(app, CONFIRMED)
    link = confirm_link(app, CONFIRMED)
    assert subscriber(app, CONFIRMED).confirmed_at is None
    confirm(app, link)
    assert subscriber(app, CONFIRMED).confirmed_at is not None
    with pytest.raises(Refused) as refused:
        confirm(app, link)
    assert refused.value.rule == "link_used"


def test_a_link_with_a_tampered_signature_is_invalid(app: App) -> None:
    subscribe(app, CONFIRMED)
    link = confirm_link(app, CONFIRMED)
    token_id, _, signature = link.partition(".")
    forged = f"{token_id}.{'0' if signature[0] != '0' else '1'}{signature[1:]}"
    with pytest.raises(Refused) as refused:
        confirm(app, forged)
    assert refused.value.rule == "link_invalid"
    assert subscriber(app, CONFIRMED).confirmed_at is None
    confirm(app, link)  # the forgery used nothing up
    assert subscriber(app, CONFIRMED).confirmed_at is not None


def test_a_confirmation_link_expires_after_the_link_validity(app: App, clock: ManualClock) -> None:
    subscribe(app, CONFIRMED)
    link = confirm_link(app, CONFIRMED)
    clock.advance(days=app.settings.link_valid.days, minutes=1)
    with pytest.raises(Refused) as refused:
        confirm(app, link)
    assert refused.value.rule == "link_expired"
    assert subscriber(app, CONFIRMED).confirmed_at is None


def test_a_confirmation_link_cannot_unsubscribe_nor_an_unsubscribe_link_confirm(
    app: App,
) -> None:
    subscribe(app, CONFIRMED)
    confirmation = confirm_link(app, CONFIRMED)
    with pytest.raises(Refused) as refused:
        unsubscribe(app, confirmation)
    assert refused.value.rule == "link_invalid"
    confirm(app, confirmation)  # the refused attempt did not use the link up

    announcement_id = draft(app, "subscribers")["id"]
    send(app, announcement_id)
    (row,) = announcement_rows(app, announcement_id)
    leave = link_of(app, row)
    with pytest.raises(Refused) as refused:
        confirm(app, leave)
    assert refused.value.rule == "link_invalid"
    assert subscriber(app, CONFIRMED).unsubscribed_at is None
    assert unsubscribe(app, leave) == CONFIRMED
    assert subscriber(app, CONFIRMED).unsubscribed_at is not None


def test_an_unsubscribed_address_gets_no_bulk_mail_until_it_subscribes_and_confirms_again(
    app: App, clock: ManualClock
) -> None:
    clock.now = AUGUST
    subscribe(app, CONFIRMED)
    confirm(app, confirm_link(app, CONFIRMED))
    first = draft(app, "subscribers")["id"]
    assert send(app, first) == 1
    unsubscribe(app, link_of(app, announcement_rows(app, first)[0]))

    assert draft(app, "subscribers")["readers"] == 0
    second = draft(app, "subscribers")["id"]
    assert send(app, second) == 0
    clock.now = local(2026, 9, 1)
    assert run_round_mail(app)["announced"] == 1
    assert outbox_rows(app, "round_opened") == []

    # Subscribing again asks for a new confirmation; until then, still no bulk mail.
    subscribe(app, CONFIRMED)
    confirmations = [r for r in outbox_rows(app, "subscription_confirm") if r.to_email == CONFIRMED]
    assert len(confirmations) == 2
    assert confirmations[0].link_token_id != confirmations[1].link_token_id
    again = subscriber(app, CONFIRMED)
    assert (again.confirmed_at, again.unsubscribed_at) == (None, None)
    assert draft(app, "subscribers")["readers"] == 0
    confirm(app, confirm_link(app, CONFIRMED))
    assert draft(app, "subscribers")["readers"] == 1


def test_an_address_unsubscribed_through_a_subscriber_link_is_not_told_of_rounds_as_applicant(
    app: App, clock: ManualClock
) -> None:
    clock.now = AUGUST
    apply(app, PAST_APPLICANT, "Priit Paju", actor=COORDINATOR, notify_rounds=True)
    subscribe(app, PAST_APPLICANT)
    confirm(app, confirm_link(app, PAST_APPLICANT))
    announcement_id = draft(app, "subscribers")["id"]
    send(app, announcement_id)
    (row,) = announcement_rows(app, announcement_id)
    assert unsubscribe(app, link_of(app, row)) == PAST_APPLICANT

    clock.now = local(2026, 9, 1)
    assert run_round_mail(app)["announced"] == 1
    assert readers_of(app, "round_opened") == []


def test_subscribing_an_address_that_is_already_confirmed_sends_no_new_confirmation(
    app: App,
) -> None:
    subscribe(app, CONFIRMED)
    confirm(app, confirm_link(app, CONFIRMED))
    subscribe(app, CONFIRMED.upper())
    assert len(outbox_rows(app, "subscription_confirm")) == 1
    assert subscriber(app, CONFIRMED).confirmed_at is not None


# -- announcements ---------------------------------------------------------------------------

MENTORS = [("tonu.ounapuu@example.org", "Tõnu Õunapuu"), ("anu.saar@example.org", "Anu Saar")]


def test_an_announcement_to_mentors_is_previewed_then_sent_once_to_each_listed_mentor(
    app: App, clock: ManualClock
) -> None:
    for email, name in MENTORS:
        list_mentor(app, clock, email, name)
    apply(app, "ene.ehin@example.org", "Ene Ehin", actor=COORDINATOR)  # not listed yet

    preview = draft(app, "mentors")
    assert preview["readers"] == 2 and preview["sent"] is False
    assert preview["et"] == {"subject": TEXTS["et"][0], "body": TEXTS["et"][1]}
    assert outbox_rows(app, "announcement") == []

    assert send(app, preview["id"]) == 2
    rows = announcement_rows(app, preview["id"])
    assert sorted(row.to_email for row in rows) == sorted(email for email, _ in MENTORS)
    assert all(row.bulk and row.link_token_id for row in rows)
    with app.unit() as tx:
        announcement = tx.session.get(Announcement, preview["id"])
        assert announcement is not None and announcement.sent_at == clock.now

    with pytest.raises(Refused) as refused:
        send(app, preview["id"])
    assert refused.value.rule == "sent_once"
    assert len(announcement_rows(app, preview["id"])) == 2

    # A mentor who follows the unsubscribe link gets no later announcement.
    leaver = next(row for row in rows if row.to_email == MENTORS[0][0])
    assert unsubscribe(app, link_of(app, leaver)) == MENTORS[0][0]
    later = draft(app, "mentors")
    assert later["readers"] == 1
    assert send(app, later["id"]) == 1
    assert [row.to_email for row in announcement_rows(app, later["id"])] == [MENTORS[1][0]]


def test_an_announcement_to_subscribers_counts_only_confirmed_ones(app: App) -> None:
    subscribe(app, CONFIRMED)
    subscribe(app, UNCONFIRMED)
    confirm(app, confirm_link(app, CONFIRMED))
    preview = draft(app, "subscribers")
    assert preview["readers"] == 1
    assert send(app, preview["id"]) == 1
    assert [row.to_email for row in announcement_rows(app, preview["id"])] == [CONFIRMED]


@pytest.mark.parametrize("author", [COMMITTEE[0], "nobody@example.org"])
def test_only_a_coordinator_can_draft_an_announcement(app: App, author: str) -> None:
    with pytest.raises(Refused) as refused:
        draft(app, "mentors", author=author)
    assert refused.value.rule == "role"
    with app.unit() as tx:
        assert tx.session.scalars(select(Announcement)).all() == []


@pytest.mark.parametrize(
    ("texts", "field"),
    [
        ({"et": ("", TEXTS["et"][1]), "en": TEXTS["en"]}, "subject_et"),
        ({"et": TEXTS["et"], "en": (TEXTS["en"][0], "  ")}, "body_en"),
        ({"et": ("Kaks\nrida", TEXTS["et"][1]), "en": TEXTS["en"]}, "subject_et"),
        ({"et": TEXTS["et"]}, "subject_en"),
    ],
)
def test_an_announcement_without_a_subject_or_body_is_refused_naming_the_field(
    app: App, texts: dict[str, tuple[str, str]], field: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        draft(app, "mentors", **texts)
    assert refused.value.field == field


def test_an_announcement_to_an_unknown_audience_is_refused(app: App) -> None:
    with pytest.raises(InvalidInput) as refused:
        draft(app, "everyone")
    assert refused.value.field == "audience"


def test_a_coordinator_drafts_previews_and_sends_an_announcement_from_the_command_line(
    cli_database: App, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    email, name = MENTORS[0]
    assert isinstance(cli_database.clock, ManualClock)
    list_mentor(cli_database, cli_database.clock, email, name)
    body_et, body_en = tmp_path / "body.et.txt", tmp_path / "body.en.txt"
    body_et.write_text(TEXTS["et"][1], encoding="utf-8")
    body_en.write_text(TEXTS["en"][1], encoding="utf-8")
    argv = [
        "announce",
        "draft",
        "--audience",
        "mentors",
        "--actor",
        COORDINATOR,
        "--subject-et",
        TEXTS["et"][0],
        "--body-et",
        str(body_et),
        "--subject-en",
        TEXTS["en"][0],
        "--body-en",
        str(body_en),
    ]
    code, preview, _ = cli(capsys, *argv)
    assert code == 0
    assert (preview["audience"], preview["readers"], preview["sent"]) == ("mentors", 1, False)
    assert preview["en"] == {"subject": TEXTS["en"][0], "body": TEXTS["en"][1]}
    assert outbox_rows(cli_database, "announcement") == []

    code, sent, _ = cli(capsys, "announce", "send", str(preview["id"]))
    assert (code, sent["queued"]) == (0, 1)
    assert [row.to_email for row in outbox_rows(cli_database, "announcement")] == [email]
    code, _, err = cli(capsys, "announce", "send", str(preview["id"]))
    assert code == 1 and err.startswith("refused (sent_once)")

    code, _, err = cli(capsys, *argv[:4], "--actor", COMMITTEE[0], *argv[6:])
    assert code == 1 and err.startswith("refused (role)")
    code, _, err = cli(capsys, *argv[:-1], str(tmp_path / "missing.txt"))
    assert code == 1 and err.startswith("invalid input: --body-en")

    # A subscriber added from the command line is not a reader until it confirms.
    code, added, _ = cli(capsys, "subscriber", "add", CONFIRMED)
    assert (code, added) == (0, {"email": CONFIRMED, "confirmed": False})
    assert [row.to_email for row in outbox_rows(cli_database, "subscription_confirm")] == [
        CONFIRMED
    ]
    code, preview, _ = cli(capsys, *argv[:3], "subscribers", *argv[4:])
    assert (code, preview["readers"]) == (0, 0)
