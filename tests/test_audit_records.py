"""The audit trail as a record: the parties' own words kept for the two of them, each step
under the name its actor had then, each committee vote and each change of it as an audited
value, and one answer to a committee member for every case that is not their interview.

Cases move through the real steps; the console, the API and the committee view are read over
HTTP (TestClient) with real logins, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from lifecycle.bootstrap import App
from lifecycle.cases import queries
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import Refused
from lifecycle.mail import emails
from lifecycle.privacy import erasure
from lifecycle.privacy import export as privacy_export
from lifecycle.reports import tables as report_tables
from lifecycle.store import db
from lifecycle.store.models import AuditEvent, CommitteeVote, OutboxMessage, Person
from lifecycle.web.pages import texts
from lifecycle.workflows.engine import load_case
from tests.conftest import COMMITTEE, COORDINATOR, STAFF_PASSWORD, bring, list_mentor

MENTOR, MENTOR_NAME = "mirjam.mets@example.org", "Mirjam Mets"
MENTEE, MENTEE_NAME = "kaspar.kask@example.org", "Kaspar Kask"
APPLICANT = "anton.aru@example.org"
REASON = "Oma-sõnad-R1: mu peres on praegu raske aeg"
STAFF_REASON = "Koordinaator-K1: mentor jäi pikalt haiguslehele"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


# -- helpers ---------------------------------------------------------------------------------


def relation_in(app: App, clock: ManualClock, state: str) -> str:
    list_mentor(app, clock, MENTOR, MENTOR_NAME)
    ref = scenarios.submit_request(app, scenarios.mentee(MENTEE, MENTEE_NAME, MENTOR))
    scenarios.bring_relation(app, clock, ref, state, mentor=MENTOR, mentee_email=MENTEE)
    return ref


def log_in(client: TestClient, email: str) -> None:
    token = CSRF.search(client.get("/console/login").text)
    assert token
    answer = client.post(
        "/console/login",
        data={"csrf": token.group(1), "email": email, "password": STAFF_PASSWORD},
    )
    assert answer.status_code == 303


def csrf_of(client: TestClient, path: str) -> str:
    found = CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def api_steps(web: TestClient, ref: str) -> list[dict[str, Any]]:
    answer = web.get(f"/api/v1/cases/{ref}", auth=(COORDINATOR, STAFF_PASSWORD))
    assert answer.status_code == 200
    return [entry for entry in answer.json()["timeline"] if entry["kind"] == "step"]


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


def interview_held(app: App, clock: ManualClock, committee: list[str]) -> str:
    """An application whose interview with `committee` took place an hour ago."""
    data = scenarios.applicant(APPLICANT, "Anton Aru")
    ref = scenarios.submit_application(app, data, actor=COORDINATOR)
    bring(app, clock, ref, "interview", APPLICANT)
    at = clock.now + timedelta(days=5)
    scenarios.step(
        app,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=at,
        place="Tallinn, Lastekodu 12",
        committee=committee,
    )
    clock.now = at + timedelta(hours=1)
    return ref


def vote_events(app: App, ref: str) -> list[tuple[str, dict[str, Any] | None]]:
    with app.read() as tx:
        case, _ = load_case(tx, ref)
        events = tx.session.scalars(
            select(AuditEvent)
            .where(AuditEvent.case_id == case.id, AuditEvent.trigger == "record_vote")
            .order_by(AuditEvent.id)
        )
        return [(event.actor_name, event.detail) for event in events]


def seat_of(app: App, ref: str, email: str) -> str | None:
    with app.read() as tx:
        _, application = load_case(tx, ref)
        return tx.session.scalar(
            select(CommitteeVote.vote)
            .join(Person, CommitteeVote.member_id == Person.id)
            .where(CommitteeVote.application_id == application.id, Person.email == email)
        )


# -- the parties' own words ------------------------------------------------------------------


def test_a_coordinator_cannot_read_a_mentors_reason_anywhere_while_the_mentee_gets_it_by_email(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = relation_in(app, clock, "requested")

    scenarios.step(app, ref, "decline", MENTOR, reason=REASON)

    log_in(web, COORDINATOR)
    page = web.get(f"/console/cases/{ref}")
    assert page.status_code == 200
    assert f"({MENTOR_NAME}, mentor)" in page.text  # the step, its actor and role are there
    assert REASON not in page.text
    [declined] = [step for step in api_steps(web, ref) if step["trigger"] == "decline"]
    assert (declined["actor"], declined["role"], declined["to"]) == (
        MENTOR_NAME,
        "mentor",
        "declined",
    )
    assert declined["comment"] == "" and REASON not in json.dumps(declined, ensure_ascii=False)
    reports = [web.get("/console/reports")] + [
        web.get(f"/console/reports/{name}.csv") for name in report_tables.REPORTS
    ]
    assert {report.status_code for report in reports} == {200}
    assert not [report.request.url for report in reports if REASON in report.text]
    for someone_else in (COORDINATOR, COMMITTEE[0]):
        with app.read() as tx:
            held = privacy_export.export_person(tx, email=someone_else)
        assert REASON not in json.dumps(held, ensure_ascii=False), someone_else
    assert REASON in email_text(app, "request_declined", MENTEE)


def test_a_coordinators_own_reason_stays_in_the_timeline_and_reaches_the_parties(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = relation_in(app, clock, "first_meeting")

    scenarios.step(app, ref, "cancel", COORDINATOR, reason=STAFF_REASON)

    log_in(web, COORDINATOR)
    assert STAFF_REASON in web.get(f"/console/cases/{ref}").text
    [cancelled] = [step for step in api_steps(web, ref) if step["trigger"] == "cancel"]
    assert (cancelled["actor"], cancelled["comment"]) == ("Liis Lepik", STAFF_REASON)
    assert STAFF_REASON in email_text(app, "relation_cancelled", MENTOR)


def test_the_timeline_shows_a_closings_outcome_but_not_the_reason_given_for_it(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = relation_in(app, clock, "active")

    scenarios.step(app, ref, "close", MENTEE, outcome="ended_early", reason=REASON)

    log_in(web, COORDINATOR)
    [closed] = [step for step in api_steps(web, ref) if step["trigger"] == "close"]
    assert (closed["actor"], closed["detail"], closed["comment"]) == (
        MENTEE_NAME,
        {"outcome": "ended_early"},
        "",
    )
    page = web.get(f"/console/cases/{ref}").text
    assert "Tulemus: lõpetatud enne tähtaega" in page
    assert REASON not in page and "ended_early" not in page


# -- who acted, by name ----------------------------------------------------------------------


def test_each_step_keeps_the_name_its_actor_had_when_taking_it(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = scenarios.submit_application(
        app, scenarios.applicant(APPLICANT, "Anton Aru"), actor=COORDINATOR
    )
    scenarios.step(app, ref, "begin_review", COORDINATOR)
    with app.unit() as tx:  # a later rename: say, a form sent with her address
        tx.session.execute(
            update(Person).where(Person.email == COORDINATOR).values(name="Keegi Teine")
        )
    clock.advance(hours=1)

    scenarios.step(app, ref, "request_info", COORDINATOR, message="Palun diplomi koopia.")

    log_in(web, COORDINATOR)
    actors = [(step["trigger"], step["actor"]) for step in api_steps(web, ref)]
    assert actors == [
        ("submit", "Liis Lepik"),
        ("begin_review", "Liis Lepik"),
        ("request_info", "Keegi Teine"),
    ]
    page = web.get(f"/console/cases/{ref}").text
    assert page.count("(Liis Lepik, coordinator)") == 2
    assert page.count("(Keegi Teine, coordinator)") == 1


def test_an_erased_persons_steps_keep_their_place_under_the_pseudonym(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "active")
    scenarios.step(app, ref, "close", MENTEE, outcome="completed", reason=REASON)

    with app.unit() as tx:
        pseudonym = erasure.erase_person(tx, email=MENTEE)["pseudonym"]
    with app.read() as tx:
        steps = [e for e in queries.show_case(tx, ref)["timeline"] if e["kind"] == "step"]
        erased = tx.session.scalar(select(Person.name).where(Person.email == pseudonym))

    by = {step["trigger"]: step["actor"] for step in steps}
    assert erased is not None and erased.startswith("erased-")
    assert by["request"] == by["close"] == erased
    assert by["accept"] == MENTOR_NAME
    assert MENTEE_NAME not in json.dumps(steps, ensure_ascii=False)


# -- committee votes -------------------------------------------------------------------------


def test_each_vote_and_each_change_of_it_is_an_audit_event_with_the_old_and_new_value(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = interview_held(app, clock, COMMITTEE)

    scenarios.step(app, ref, "record_vote", COMMITTEE[0], vote="decline", notes="Liiga vara.")
    clock.advance(minutes=30)
    scenarios.step(app, ref, "record_vote", COMMITTEE[0], vote="approve", notes="Veensid mind.")
    scenarios.step(app, ref, "record_vote", COMMITTEE[1], vote="recuse")

    assert vote_events(app, ref) == [
        ("Komisjoniliige 1", {"vote": "decline", "previous": None}),
        ("Komisjoniliige 1", {"vote": "approve", "previous": "decline"}),
        ("Komisjoniliige 2", {"vote": "recuse", "previous": None}),
    ]
    assert seat_of(app, ref, COMMITTEE[0]) == "approve"
    log_in(web, COORDINATOR)
    page = web.get(f"/console/cases/{ref}").text
    assert "Hääl: vastu" in page and "Hääl: poolt · enne: vastu" in page
    assert "Hääl: taandas end" in page


@pytest.mark.parametrize(("decision", "votes"), [("approve", "approve"), ("decline", "decline")])
def test_a_vote_after_the_decision_is_refused_as_final(
    app: App, clock: ManualClock, decision: str, votes: str
) -> None:
    ref = interview_held(app, clock, COMMITTEE)
    for member in COMMITTEE:
        scenarios.step(app, ref, "record_vote", member, vote=votes)
    extra = {"reason": "Komisjon ei kinnitanud."} if decision == "decline" else {}
    scenarios.step(app, ref, decision, COORDINATOR, **extra)
    before = vote_events(app, ref)

    with pytest.raises(Refused) as refusal:
        scenarios.step(app, ref, "record_vote", COMMITTEE[0], vote="recuse")

    assert refusal.value.rule == "votes_open"
    assert "final" in refusal.value.reason
    assert vote_events(app, ref) == before
    assert seat_of(app, ref, COMMITTEE[0]) == votes


def test_a_member_changes_their_vote_on_the_committee_page_until_the_decision(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = interview_held(app, clock, COMMITTEE)
    log_in(web, COMMITTEE[0])
    token = csrf_of(web, "/console/committee")
    web.post(f"/console/committee/{ref}/vote", data={"csrf": token, "vote": "decline"})

    page = web.get("/console/committee").text
    assert "Muuda oma häält (kuni otsuseni)" in page
    assert 'value="decline" checked' in page
    web.post(f"/console/committee/{ref}/vote", data={"csrf": token, "vote": "approve"})
    for member in COMMITTEE[1:]:
        scenarios.step(app, ref, "record_vote", member, vote="approve")
    scenarios.step(app, ref, "approve", COORDINATOR)

    assert seat_of(app, ref, COMMITTEE[0]) == "approve"
    assert [detail for _, detail in vote_events(app, ref)][:2] == [
        {"vote": "decline", "previous": None},
        {"vote": "approve", "previous": "decline"},
    ]
    page = web.get("/console/committee").text
    assert "Otsus on tehtud: hääled on lõplikud." in page
    assert f'action="/console/committee/{ref}/vote"' not in page


def test_a_committee_member_gets_one_answer_for_every_case_that_is_not_their_interview(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    fourth = "neljas.liige@esta.example"
    scenarios.add_staff(app, name="Neljas Liige", email=fourth, role="committee")
    mentoring = relation_in(app, clock, "first_meeting")  # its mentor's panel included COMMITTEE[0]
    others = interview_held(app, clock, [*COMMITTEE[1:], fourth])
    log_in(web, COMMITTEE[0])
    token = csrf_of(web, "/console/committee")

    answers = {
        ref: web.post(f"/console/committee/{ref}/vote", data={"csrf": token, "vote": "approve"})
        for ref in (others, mentoring, "A-99999", "M-99999", "nonsense")
    }

    assert {answer.status_code for answer in answers.values()} == {404}
    assert len({answer.text for answer in answers.values()}) == 1
    body = answers[others].text
    assert "See ei ole sinu vestlus." in body
    for revealing in (others, mentoring, "interview", "first_meeting", "possible", "Anton Aru"):
        assert revealing not in body, revealing
    assert seat_of(app, others, COMMITTEE[1]) is None
    assert vote_events(app, others) == []


def test_every_choice_a_step_records_has_its_words_on_the_case_page(app: App) -> None:
    words = texts()["audit"]
    fields = {
        field.name: field.choices
        for workflow in app.workflows.values()
        for spec in workflow.transitions
        for field in spec.fields
        if field.type == "choice"
    }
    keys = {f"field_{name}" for name in fields} | {"field_previous"}
    keys |= {f"value_{choice}" for choices in fields.values() for choice in choices}

    assert sorted(key for key in keys if set(words.get(key, {})) != {"et", "en"}) == []


# -- the migration ---------------------------------------------------------------------------


def test_the_migration_takes_the_parties_reasons_out_of_the_staffs_comment_and_back(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "requested")
    scenarios.step(app, ref, "decline", MENTOR, reason=REASON)
    config = db.alembic_config(app.engine)

    command.downgrade(config, "0005")
    with app.engine.connect() as connection:
        comments = connection.exec_driver_sql(
            "SELECT comment FROM audit_events WHERE \"trigger\" = 'decline'"
        ).scalars()
        assert list(comments) == [REASON]
    command.upgrade(config, "head")

    with app.read() as tx:
        [declined] = tx.session.scalars(select(AuditEvent).where(AuditEvent.trigger == "decline"))
        assert (declined.comment, declined.party_text) == ("", REASON)
        assert (declined.actor_name, declined.detail) == (MENTOR_NAME, None)
