"""A person's data: export, erasure, the retention job and the migration that supports them.

Cases are driven through the real steps (lifecycle.scenarios) on SQLite and PostgreSQL;
what erasure leaves behind is checked by reading every column of every table.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select

from lifecycle.bootstrap import App
from lifecycle.cases import queries
from lifecycle.cli.main import main
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import Refused
from lifecycle.mail import bulk, delivery, emails
from lifecycle.privacy import erasure, retention
from lifecycle.privacy import export as privacy_export
from lifecycle.reports import disclosure
from lifecycle.reports import tables as report_tables
from lifecycle.schedule import scheduler
from lifecycle.store import db
from lifecycle.store.models import (
    ActionToken,
    AuditEvent,
    Base,
    Case,
    Feedback,
    LoginFailure,
    OutboxMessage,
    Person,
    PrivacyEvent,
    Relation,
)
from lifecycle.web.app import create
from lifecycle.workflows import links
from lifecycle.workflows.engine import load_case
from tests.conftest import COMMITTEE, COORDINATOR, list_mentor

MENTOR, MENTOR_NAME = "maie.mand@example.org", "Maie Mänd"
MENTEE, MENTEE_NAME = "oskar.orav@example.org", "Oskar Orav"
MENTEE_ORG = "Viljandi Hoolekandekeskus"
# Each confidential text is distinct, so finding one anywhere means it was kept.
QUESTION = "Küsimus-Q1: kuidas taastada usaldus meeskonnas?"
GOAL = "Eesmärk-G1: meeskonna usaldus taastatud"
RHYTHM = "Rütm-R1: igal teisel neljapäeval"
FEE = "Tasu-F1: kohvi ja kook"
NOTES = "Refleksioon-N1: täna arutasime konflikti"
PLACE = "Koht-P1: Lossi 3 kohvik"
COMMENT = "Tagasiside-C1: väga toetav mentor"
REASON = "Põhjus-E1: eesmärk saavutatud"
SECRETS = (
    MENTEE,
    MENTEE_NAME,
    MENTEE_ORG,
    QUESTION,
    GOAL,
    RHYTHM,
    FEE,
    NOTES,
    PLACE,
    COMMENT,
    REASON,
)


# -- helpers ---------------------------------------------------------------------------------


def request(app: App) -> str:
    data = scenarios.mentee(MENTEE, MENTEE_NAME, MENTOR, question=QUESTION, organisation=MENTEE_ORG)
    return scenarios.submit_request(app, data)


def closed_relation(app: App, clock: ManualClock) -> str:
    """A relation with every kind of confidential text, closed, and the mentee's feedback."""
    ref = request(app)
    scenarios.bring_relation(app, clock, ref, "agreement", mentor=MENTOR, mentee_email=MENTEE)
    start = clock.now.date()
    scenarios.step(
        app,
        ref,
        "draft_agreement",
        MENTEE,
        goal=GOAL,
        starts_on=start,
        ends_on=start + timedelta(days=180),
        meeting_rhythm=RHYTHM,
        fee=FEE,
        confidentiality=True,
    )
    for party in (MENTOR, MENTEE):
        scenarios.step(app, ref, "sign", party)
    clock.advance(days=20)
    scenarios.step(app, ref, "log_meeting", MENTEE, starts_at=clock.now, place=PLACE, notes=NOTES)
    clock.advance(days=20)
    scenarios.step(app, ref, "close", MENTEE, outcome="completed", reason=REASON)
    scenarios.step(app, ref, "give_feedback", MENTEE, rating=5, comment=COMMENT)
    return ref


def everything_held(app: App) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in id order."""
    held = {}
    with app.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            rows = connection.execute(select(table).order_by(*table.primary_key.columns))
            held[table.name] = [tuple(row) for row in rows]
    return held


def found(secrets: tuple[str, ...], held: dict[str, list[tuple[Any, ...]]]) -> set[str]:
    text = json.dumps(held, default=str, ensure_ascii=False)
    return {secret for secret in secrets if secret in text}


def statistics(app: App) -> dict[str, Any]:
    """What reports count: states, the audit trail's steps and times, topics, outcomes, ratings."""
    with app.unit() as tx:
        return {
            "cases": [(c.id, c.workflow, c.state, c.state_entered_at) for c in _all(tx, Case)],
            "steps": [
                (e.case_id, e.at, e.actor_id, e.trigger, e.from_state, e.to_state)
                for e in _all(tx, AuditEvent)
            ],
            "relations": [
                (r.mentor_id, r.mentee_id, r.topic, r.outcome, r.requested_at)
                for r in _all(tx, Relation)
            ],
            "ratings": [(f.person_id, f.rating, f.given_at) for f in _all(tx, Feedback)],
            "people": len(_all(tx, Person)),
        }


def _all(tx: Any, model: Any) -> list[Any]:
    return list(tx.session.scalars(select(model).order_by(model.id)))


def erase(app: App, email: str, **options: Any) -> dict[str, Any]:
    with app.unit() as tx:
        return erasure.erase_person(tx, email=email, **options)


def export(app: App, email: str) -> dict[str, Any]:
    with app.unit() as tx:
        return privacy_export.export_person(tx, email=email)


def token_ids(app: App) -> list[str]:
    with app.unit() as tx:
        return list(tx.session.scalars(select(ActionToken.id)))


def link_path(app: App, template: str, to: str) -> str:
    with app.unit() as tx:
        message = tx.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == template, OutboxMessage.to_email == to)
            .order_by(OutboxMessage.id.desc())
        ).first()
        assert message is not None
        link = str(emails.context_for(tx.session, tx.settings, message)["link"])
    return link[len(app.settings.base_url) :]


# -- export ----------------------------------------------------------------------------------


def test_a_mentees_export_holds_their_relation_texts_steps_and_mail_but_no_link_secret(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    ref = closed_relation(app, clock)

    data = export(app, MENTEE.upper())

    text = json.dumps(data, ensure_ascii=False)  # plain JSON, no custom encoder needed
    assert data["person"]["name"] == MENTEE_NAME and data["person"]["has_password"] is False
    assert "password_hash" not in data["person"]
    [relation] = data["relations"]
    assert (relation["case"], relation["role"], relation["with"]) == (ref, "mentee", MENTOR_NAME)
    assert (relation["question"], relation["mentee_organisation"]) == (QUESTION, MENTEE_ORG)
    [agreement] = relation["agreements"]
    assert (agreement["goal"], agreement["meeting_rhythm"], agreement["fee"]) == (GOAL, RHYTHM, FEE)
    assert {s["party"] for s in agreement["signatures"]} == {"mentor", "mentee"}
    assert [(m["place"], m["notes"]) for m in relation["meetings"] if m["notes"]] == [
        (PLACE, NOTES)
    ]
    assert [(f["rating"], f["comment"]) for f in relation["feedback"]] == [(5, COMMENT)]
    steps = [e["trigger"] for e in relation["events"]]
    assert steps[0] == "request" and "close" in steps and "give_feedback" in steps
    assert any(e["party_text"] == REASON and e["by_you"] for e in relation["events"])
    assert {m["template"] for m in data["emails"]} >= {"request_sent", "feedback_request"}
    assert {link["action"] for link in data["links"]} >= {"feedback", "agreement"}
    assert token_ids(app) and not [token for token in token_ids(app) if token in text]
    assert data["applications"] == [] and data["profile"] is None


def test_a_mentors_export_holds_profile_credentials_evidence_and_the_applications_steps(
    app: App, clock: ManualClock
) -> None:
    application = list_mentor(app, clock, MENTOR, MENTOR_NAME)

    data = export(app, MENTOR)

    assert data["profile"]["background"] == scenarios.applicant(MENTOR, "")["background"]
    assert [c["kind"] for c in data["profile"]["credentials"]] == ["supervisor"]
    [held] = data["applications"]
    assert (held["case"], held["state"]) == (application, "listed")
    assert {e["kind"] for e in held["evidence"]} == {"degree", "experience", "credential"}
    assert all(e["verified_at"] for e in held["evidence"])
    assert [v["vote"] for v in held["committee_votes"]] == ["approve"] * 3
    assert [e["to_state"] for e in held["events"]][-1] == "listed"


def test_a_committee_members_export_holds_their_seats_and_steps_on_others_cases(
    app: App, clock: ManualClock
) -> None:
    application = list_mentor(app, clock, MENTOR, MENTOR_NAME)

    data = export(app, COMMITTEE[0])

    assert [(s["case"], s["vote"]) for s in data["committee_seats"]] == [(application, "approve")]
    assert [s["trigger"] for s in data["steps_on_other_cases"]] == ["record_vote"]


def test_exporting_an_unknown_address_says_nothing_is_held(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", app.settings.database_url)

    assert main(["person", "export", "nobody@example.org"]) == 1
    assert "nothing is held about nobody@example.org" in capsys.readouterr().err


def test_the_export_command_prints_json(
    app: App,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", app.settings.database_url)

    assert main(["person", "export", MENTOR]) == 0

    assert json.loads(capsys.readouterr().out)["person"]["email"] == MENTOR


# -- who reads a party's own words -----------------------------------------------------------

# Every mentoring step on which a mentor or a mentee types a reason: the state it is taken in,
# the party who takes it, what else it needs, and the email that quotes the reason to the
# other party (None: its emails quote none).
PARTY_STEPS: dict[str, tuple[str, str, dict[str, Any], str | None]] = {
    "decline": ("requested", "mentor", {}, "request_declined"),
    "cancel_meeting": ("first_meeting", "mentor", {}, "meeting_cancelled"),
    "discontinue": ("first_meeting", "mentee", {}, None),
    "cancel": ("agreement", "mentee", {}, "relation_cancelled"),
    "close": ("active", "mentee", {"outcome": "ended_early"}, None),
}
# Whether each reader of a relation reads the reason a party gave on a step.
WHO_READS = {
    "the coordinators' case view (console page and API)": False,
    "the reports": False,
    "a coordinator's export": False,
    "a committee member's export": False,
    "the acting party's export": True,
    "the other party's export": True,
    "the other party's email": True,
}
PARTY_REASON = "Põhjus-W1: minu isiklikud asjaolud"


def what_each_reads(
    app: App, ref: str, actor: str, other: str, template: str | None
) -> dict[str, str]:
    with app.read() as tx:
        texts = {
            "the coordinators' case view (console page and API)": json.dumps(
                queries.show_case(tx, ref, role="coordinator"), ensure_ascii=False
            ),
            "the reports": "".join(
                disclosure.to_csv(report_tables.build(tx, name)) for name in report_tables.REPORTS
            ),
        }
    for reader, email in (
        ("a coordinator's export", COORDINATOR),
        ("a committee member's export", COMMITTEE[0]),
        ("the acting party's export", actor),
        ("the other party's export", other),
    ):
        texts[reader] = json.dumps(export(app, email), ensure_ascii=False)
    if template is not None:
        texts["the other party's email"] = email_text(app, template, other)
    return texts


def email_text(app: App, template: str, to: str) -> str:
    """The plain text of the newest email of this kind to this address, as it is sent."""
    with app.read() as tx:
        message = tx.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == template, OutboxMessage.to_email == to)
            .order_by(OutboxMessage.id.desc())
        ).first()
        assert message is not None, f"no {template} to {to}"
        context = emails.context_for(tx.session, tx.settings, message)
        return emails.render_all(
            tx.settings.templates_dir,
            template,
            message.language,
            context,
            base_url=tx.settings.base_url,
        ).text


@pytest.mark.parametrize("trigger", list(PARTY_STEPS))
def test_a_partys_reason_is_read_by_the_two_parties_and_by_nobody_else(
    app: App, clock: ManualClock, trigger: str
) -> None:
    state, party, values, template = PARTY_STEPS[trigger]
    actor, other = (MENTOR, MENTEE) if party == "mentor" else (MENTEE, MENTOR)
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    ref = request(app)
    scenarios.bring_relation(app, clock, ref, state, mentor=MENTOR, mentee_email=MENTEE)
    if trigger == "cancel_meeting":
        scenarios.step(
            app, ref, "schedule_meeting", MENTEE, starts_at=clock.now + timedelta(days=2), place="x"
        )
        with app.read() as tx:
            relation = load_case(tx, ref)[1]
            assert isinstance(relation, Relation)
            values = {"meeting": max(meeting.id for meeting in relation.meetings)}

    scenarios.step(app, ref, trigger, actor, reason=PARTY_REASON, **values)

    reads = {
        reader: PARTY_REASON in text
        for reader, text in what_each_reads(app, ref, actor, other, template).items()
    }
    expected = dict(WHO_READS)
    if template is None:  # no email of the step quotes a reason
        del expected["the other party's email"]
    assert reads == expected


# -- erasure ---------------------------------------------------------------------------------


def test_erasing_a_mentee_removes_who_they_were_and_the_texts_and_keeps_the_statistics(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    closed_relation(app, clock)
    before = statistics(app)
    assert found(SECRETS, everything_held(app)) == set(SECRETS)

    result = erase(app, MENTEE, actor_email=COORDINATOR)

    assert found(SECRETS, everything_held(app)) == set()
    assert statistics(app) == before
    with app.unit() as tx:
        person = tx.session.scalar(select(Person).where(Person.email == result["pseudonym"]))
        assert person is not None and person.erased_at == clock.now
        assert person.name == f"erased-{person.id}"
        [event] = tx.session.scalars(select(PrivacyEvent)).all()
        assert (event.kind, event.person_id, event.at) == ("erasure", person.id, clock.now)
        assert event.actor_id == tx.session.scalar(
            select(Person.id).where(Person.email == COORDINATOR)
        )
        assert event.counts["relations"] == 1 and event.counts["links_revoked"] > 0
        relation = tx.session.scalars(select(Relation)).one()
        assert relation.anonymised_at == clock.now
    # The mentor is still there, with their own data.
    assert found((MENTOR, MENTOR_NAME), everything_held(app)) == {MENTOR, MENTOR_NAME}


def test_an_erased_persons_links_stop_working_and_their_unsent_mail_is_cancelled(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    closed_relation(app, clock)
    feedback_link = link_path(app, "feedback_request", MENTOR)  # unused: the mentor's own
    mentee_link = link_path(app, "feedback_request", MENTEE)
    with app.unit() as tx:
        mentee_id = tx.session.scalar(select(Person.id).where(Person.email == MENTEE))
        unsent = tx.session.scalars(
            select(OutboxMessage.id).where(
                OutboxMessage.to_person_id == mentee_id, OutboxMessage.status == "pending"
            )
        ).all()
    assert unsent  # nothing was delivered in this test

    erase(app, MENTEE)

    with app.unit() as tx:
        rows = [tx.session.get(OutboxMessage, message_id) for message_id in unsent]
        assert {row.status for row in rows if row} == {"cancelled"}
        assert not tx.session.scalars(
            select(ActionToken).where(ActionToken.person_id == mentee_id)
        ).all()
        assert links.find(tx.session, tx.settings, mentee_link.removeprefix("/l/")) is None
    browser = TestClient(create(app))
    page = browser.get(mentee_link, follow_redirects=False)
    assert page.status_code == 404 and "/fresh" not in page.text  # no fresh link offered
    # The worker sends nothing to the erased person, and the other party's link still works.
    claimed = delivery.claim(app, limit=1000)
    assert not set(claimed.ids) & set(unsent)
    assert TestClient(create(app)).get(feedback_link, follow_redirects=False).status_code == 303


def test_erasure_is_refused_while_a_case_is_under_way_and_changes_nothing(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    ref = request(app)
    before = everything_held(app)

    with pytest.raises(Refused, match=f"{ref} \\(requested\\)") as refusal:
        erase(app, MENTEE)
    with pytest.raises(Refused) as mentor_refusal:
        erase(app, MENTOR)

    assert refusal.value.rule == mentor_refusal.value.rule == "open_cases"
    assert "(listed)" in mentor_refusal.value.reason
    assert everything_held(app) == before


def test_a_mentor_retired_first_is_erased_with_their_profile_and_announcement_mail(
    app: App, clock: ManualClock
) -> None:
    application = list_mentor(app, clock, MENTOR, MENTOR_NAME)
    with app.unit() as tx:
        announcement = bulk.draft_announcement(
            tx,
            audience="mentors",
            author_email=COORDINATOR,
            texts={"et": ("Seminar", "Tulge kõik."), "en": ("Seminar", "Come all.")},
        )
        assert bulk.send_announcement(tx, announcement_id=announcement.id) == 1
    scenarios.step(app, application, "retire", MENTOR)
    profile = scenarios.applicant(MENTOR, "")

    result = erase(app, MENTOR)

    held = everything_held(app)
    assert found((MENTOR, MENTOR_NAME, profile["background"], profile["fee_note"]), held) == set()
    assert result["counts"]["applications"] == 1
    with app.unit() as tx:
        case, _ = load_case(tx, application)
        assert case.state == "retired"


def test_a_coordinator_is_erased_only_with_force(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", app.settings.database_url)
    with app.unit() as tx:  # a failed login of theirs, kept by the throttle for a while
        tx.session.add(LoginFailure(key=f"email:{COORDINATOR}", at=tx.now))

    assert main(["person", "erase", COORDINATOR]) == 1
    assert "refused (coordinator)" in capsys.readouterr().err
    assert main(["--json", "person", "erase", COORDINATOR, "--force"]) == 0

    assert json.loads(capsys.readouterr().out)["erased"] is True
    with app.unit() as tx:
        assert tx.session.scalars(select(Person).where(Person.role == "coordinator")).all() == []
        assert tx.session.scalars(select(LoginFailure)).all() == []


def test_erasing_twice_is_harmless(app: App, clock: ManualClock) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    closed_relation(app, clock)
    first = erase(app, MENTEE)
    after_first = everything_held(app)

    again = erase(app, MENTEE)
    by_pseudonym = erase(app, first["pseudonym"])

    assert first["erased"] is True
    assert again["erased"] is False and by_pseudonym["erased"] is False
    assert everything_held(app) == after_first


def test_a_subscribers_address_and_confirmation_link_are_erased(app: App) -> None:
    with app.unit() as tx:
        bulk.subscribe(tx, email="uudised@example.org", language="et")

    result = erase(app, "uudised@example.org")

    assert result["counts"] == {"subscriptions": 1, "links_revoked": 1, "emails_cancelled": 1}
    assert found(("uudised@example.org",), everything_held(app)) == set()
    assert token_ids(app) == []


# -- retention -------------------------------------------------------------------------------


def test_retention_anonymises_only_relations_ended_before_the_period(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    old = closed_relation(app, clock)
    clock.advance(days=400)
    recent = request(app)
    scenarios.step(app, recent, "decline", MENTOR, reason="Põhjus-D1: puhkusel")
    clock.advance(days=app.settings.retention.days - 400 + 1)  # `old` ended > retention ago

    with app.unit() as tx:
        assert retention.run_retention(tx) == 1
        assert retention.run_retention(tx) == 0  # done once

    with app.unit() as tx:
        anonymised, kept = (load_case(tx, ref)[1] for ref in (old, recent))
        assert isinstance(anonymised, Relation) and isinstance(kept, Relation)
        assert (anonymised.question, anonymised.anonymised_at) == ("", clock.now)
        assert [(a.goal, a.fee) for a in anonymised.agreements] == [("", "")]
        assert (kept.question, kept.anonymised_at) == (QUESTION, None)
        [event] = tx.session.scalars(select(PrivacyEvent)).all()
        assert (event.kind, event.case_id) == ("retention", anonymised.case_id)
    held = everything_held(app)
    assert found((QUESTION, GOAL, NOTES, COMMENT, REASON, "Põhjus-D1: puhkusel"), held) == {
        QUESTION,  # the recent relation's
        "Põhjus-D1: puhkusel",
    }
    # Who took part stays: the people are not erased by retention.
    assert found((MENTEE_NAME, MENTOR_NAME), held) == {MENTEE_NAME, MENTOR_NAME}


def test_the_worker_runs_retention_every_night_and_with_worker_once(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    closed_relation(app, clock)
    clock.advance(days=app.settings.retention.days + 1)

    trigger = scheduler.build(app).get_job("retention").trigger
    at = trigger.get_next_fire_time(None, clock.now).astimezone(app.settings.time_zone)

    assert at.hour == scheduler.RETENTION_HOUR and not 3 <= at.hour < 4
    assert scheduler.run_due_now(app)["retention"] == 1


def test_the_retention_command_runs_it_now(
    app: App,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    closed_relation(app, clock)
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", app.settings.database_url)
    # The command runs on the real clock, months after the test's closing date.
    monkeypatch.setenv("MENTORLUS_PRIVACY__RETENTION_DAYS", "1")

    assert main(["--json", "privacy", "retention", "--once"]) == 0

    assert json.loads(capsys.readouterr().out) == {"anonymised_relations": 1}
    assert QUESTION not in found((QUESTION,), everything_held(app))


# -- the migration ---------------------------------------------------------------------------


def test_the_privacy_migration_goes_down_and_up_again(app: App) -> None:
    config = db.alembic_config(app.engine)

    command.downgrade(config, "0001")
    with app.engine.connect() as connection:
        schema = inspect(connection)
        assert "privacy_events" not in schema.get_table_names()
        assert "erased_at" not in {c["name"] for c in schema.get_columns("people")}
    command.upgrade(config, "head")
    with app.engine.connect() as connection:
        schema = inspect(connection)
        assert "privacy_events" in schema.get_table_names()
        assert "anonymised_at" in {c["name"] for c in schema.get_columns("relations")}
