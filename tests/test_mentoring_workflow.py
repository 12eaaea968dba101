"""The mentoring relation workflow through the service path: every step and every refusal.

Each test lists a mentor through the real application steps, then drives a relation with
`scenarios` and reads state, audit events, timers and outbox rows back from the database.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from lifecycle.bootstrap import App
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import InvalidInput, Refused
from lifecycle.store.models import (
    Agreement,
    AuditEvent,
    Case,
    Feedback,
    Meeting,
    OutboxMessage,
    Person,
    Relation,
    Timer,
)
from lifecycle.workflows.engine import Tx, load_case
from tests.conftest import COORDINATOR, list_mentor

TALLINN = ZoneInfo("Europe/Tallinn")
MENTOR = "mari.mets@example.org"
MENTEE = "jaan.jogi@example.org"
OTHER_MENTEE = "kati.kask@example.org"


# -- helpers ---------------------------------------------------------------------------------


def request(
    app: App,
    *,
    mentee: str = MENTEE,
    mentor: str = MENTOR,
    actor: str | None = None,
    **overrides: Any,
) -> str:
    data = scenarios.mentee(mentee, f"Juhendatav {mentee}", mentor, **overrides)
    return scenarios.submit_request(app, data, actor=actor)


def relation_in(app: App, clock: ManualClock, state: str) -> str:
    """MENTEE's relation with MENTOR, brought to `state` through the real steps."""
    ref = request(app)
    scenarios.bring_relation(app, clock, ref, state, mentor=MENTOR, mentee_email=MENTEE)
    return ref


def step(app: App, ref: str, trigger: str, actor: str | None, **values: Any) -> None:
    scenarios.step(app, ref, trigger, actor, **values)


def refusal(app: App, ref: str, trigger: str, actor: str | None, **values: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        step(app, ref, trigger, actor, **values)
    return caught.value


def request_refusal(app: App, **overrides: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        request(app, **overrides)
    return caught.value


def draft(app: App, ref: str, actor: str = MENTEE, **overrides: Any) -> None:
    values: dict[str, Any] = {
        "goal": "Selge karjääriplaan",
        "starts_on": date(2026, 10, 1),
        "ends_on": date(2027, 4, 5),
        "meeting_rhythm": "kord kuus",
        "fee": "tasuta",
        "confidentiality": True,
    }
    values.update(overrides)
    step(app, ref, "draft_agreement", actor, **values)


def case_of(tx: Tx, ref: str) -> Case:
    case, _ = load_case(tx, ref)
    return case


def relation_of(tx: Tx, ref: str) -> Relation:
    _, subject = load_case(tx, ref)
    assert isinstance(subject, Relation)
    return subject


def state_of(app: App, ref: str) -> str:
    with app.unit() as tx:
        return case_of(tx, ref).state


def last_event(tx: Tx, ref: str) -> AuditEvent:
    event = tx.session.scalar(
        select(AuditEvent)
        .where(AuditEvent.case_id == case_of(tx, ref).id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    assert event is not None
    return event


def emails_of(tx: Tx, event: AuditEvent) -> list[tuple[str, str]]:
    """(template, recipient email) of every outbox row the step queued."""
    rows = tx.session.execute(
        select(OutboxMessage.template, Person.email)
        .join(Person, Person.id == OutboxMessage.to_person_id)
        .where(OutboxMessage.event_id == event.id)
    ).all()
    return sorted((template, email) for template, email in rows)


def to_both(template: str) -> list[tuple[str, str]]:
    return sorted([(template, MENTOR), (template, MENTEE)])


def pending_timers(tx: Tx, ref: str) -> dict[str, datetime]:
    timers = tx.session.scalars(
        select(Timer).where(Timer.case_id == case_of(tx, ref).id, Timer.status == "pending")
    ).all()
    return {timer.name: timer.due_at for timer in timers}


def count_events(tx: Tx, ref: str) -> int:
    return (
        tx.session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.case_id == case_of(tx, ref).id)
        )
        or 0
    )


def agreements_of(tx: Tx, ref: str) -> list[Agreement]:
    return list(
        tx.session.scalars(
            select(Agreement)
            .where(Agreement.relation_id == relation_of(tx, ref).id)
            .order_by(Agreement.version)
        ).unique()
    )


def signers(agreement: Agreement) -> set[str]:
    return {signature.party for signature in agreement.signatures}


def row_counts(tx: Tx) -> dict[str, int]:
    return {
        model.__name__: tx.session.scalar(select(func.count()).select_from(model)) or 0
        for model in (Case, Relation, AuditEvent, OutboxMessage, Timer, Person)
    }


@pytest.fixture
def mentor(app: App, clock: ManualClock) -> str:
    """MENTOR listed with the default profile: master's degree, topics career and change_at_work,
    two places, working in Tartu Linnavalitsus."""
    return list_mentor(app, clock, MENTOR, "Mari Mets")


# -- request ---------------------------------------------------------------------------------


def test_request_opens_a_requested_case_with_audit_emails_and_reminders(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    with app.unit() as tx:
        case = case_of(tx, ref)
        relation = relation_of(tx, ref)
        event = last_event(tx, ref)
        assert case.state == "requested"
        assert relation.topic == "career"
        assert relation.mentee.email == MENTEE
        assert count_events(tx, ref) == 1
        assert (event.trigger, event.from_state, event.to_state) == ("request", None, "requested")
        assert (event.actor_id, event.actor_role) == (relation.mentee_id, "mentee")
        assert emails_of(tx, event) == [("request_received", MENTOR), ("request_sent", MENTEE)]
        assert pending_timers(tx, ref) == {
            "remind_mentor": clock.now + timedelta(days=3),
            "expire": clock.now + timedelta(days=10),
        }


def test_coordinator_may_enter_a_request_on_a_mentees_behalf(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app, actor=COORDINATOR)
    with app.unit() as tx:
        event = last_event(tx, ref)
        coordinator = tx.session.scalar(select(Person).where(Person.email == COORDINATOR))
        assert case_of(tx, ref).state == "requested"
        assert relation_of(tx, ref).mentee.email == MENTEE
        assert coordinator is not None
        assert (event.actor_id, event.actor_role) == (coordinator.id, "coordinator")
        assert emails_of(tx, event) == [("request_received", MENTOR), ("request_sent", MENTEE)]


def test_request_to_a_paused_mentor_is_refused_saying_paused(
    app: App, clock: ManualClock, mentor: str
) -> None:
    step(app, mentor, "pause", MENTOR)
    refused = request_refusal(app)
    assert refused.rule == "mentor_listed"
    assert "paused" in refused.reason


def test_request_to_a_person_who_is_not_a_listed_mentor_is_refused(
    app: App, clock: ManualClock
) -> None:
    applicant = "uus.taotleja@example.org"
    scenarios.submit_application(
        app, scenarios.applicant(applicant, "Uus Taotleja"), actor=COORDINATOR
    )
    for not_a_mentor in (applicant, COORDINATOR):
        refused = request_refusal(app, mentor=not_a_mentor)
        assert refused.rule == "mentor_listed"
        assert "not a listed mentor" in refused.reason


def test_request_is_refused_when_the_mentor_has_no_free_place(app: App, clock: ManualClock) -> None:
    list_mentor(app, clock, MENTOR, "Mari Mets", capacity=1)
    first = request(app, mentee=OTHER_MENTEE)
    step(app, first, "accept", MENTOR)
    refused = request_refusal(app)
    assert refused.rule == "mentor_has_capacity"
    assert "no free place" in refused.reason


def test_request_is_refused_when_mentee_works_in_the_mentors_organisation_in_any_case(
    app: App, clock: ManualClock, mentor: str
) -> None:
    refused = request_refusal(app, organisation="  TARTU linnavalitsus ")
    assert refused.rule == "different_organisation"
    assert "your organisation" in refused.reason


def test_request_is_refused_when_the_mentor_does_not_hold_the_topic(
    app: App, clock: ManualClock, mentor: str
) -> None:
    refused = request_refusal(app, topic="self_care_system")
    assert refused.rule == "mentor_holds_topic"
    assert "self_care_system" in refused.reason


def test_manager_mentee_is_refused_a_mentor_with_only_a_bachelors_degree(
    app: App, clock: ManualClock
) -> None:
    bachelor = "bert.bakalaureus@example.org"
    list_mentor(app, clock, bachelor, "Bert Bakalaureus", degree_level="bachelor")
    refused = request_refusal(app, mentor=bachelor, is_manager=True)
    assert refused.rule == "master_for_manager_mentee"
    assert "master's degree" in refused.reason
    # The same mentor may take a mentee who is not a manager.
    assert state_of(app, request(app, mentor=bachelor)) == "requested"


def test_manager_mentee_may_ask_a_mentor_with_a_masters_degree(
    app: App, clock: ManualClock, mentor: str
) -> None:
    assert state_of(app, request(app, is_manager=True)) == "requested"


def test_second_open_request_of_the_same_mentee_is_refused(
    app: App, clock: ManualClock, mentor: str
) -> None:
    second_mentor = "tiit.tamm@example.org"
    list_mentor(app, clock, second_mentor, "Tiit Tamm", organisation="Narva Linnavalitsus")
    request(app)
    refused = request_refusal(app, mentor=second_mentor)
    assert refused.rule == "one_open_request"
    assert "open request" in refused.reason


def test_mentee_may_ask_again_once_the_earlier_request_was_declined(
    app: App, clock: ManualClock, mentor: str
) -> None:
    first = request(app)
    step(app, first, "decline", MENTOR)
    assert state_of(app, request(app)) == "requested"


def test_a_refused_request_writes_no_rows(app: App, clock: ManualClock, mentor: str) -> None:
    with app.unit() as tx:
        before = row_counts(tx)
    request_refusal(app, topic="self_care_system")
    with app.unit() as tx:
        assert row_counts(tx) == before


# -- accept, decline, expire -----------------------------------------------------------------


def test_mentor_accepts_a_request_into_first_meeting(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    clock.advance(days=1)
    step(app, ref, "accept", MENTOR)
    with app.unit() as tx:
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "first_meeting"
        assert (event.trigger, event.from_state, event.to_state) == (
            "accept",
            "requested",
            "first_meeting",
        )
        assert event.actor_role == "mentor"
        assert emails_of(tx, event) == sorted(to_both("request_accepted"))
        # The request's reminders are cancelled; the first meeting's reminder starts.
        assert pending_timers(tx, ref) == {"meeting_date_missing": clock.now + timedelta(days=14)}


def test_mentee_cannot_accept_their_own_request(app: App, clock: ManualClock, mentor: str) -> None:
    ref = request(app)
    refused = refusal(app, ref, "accept", MENTEE)
    assert refused.rule == "role"
    assert state_of(app, ref) == "requested"


def test_accept_is_refused_when_the_mentor_was_paused_after_the_request(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    step(app, mentor, "pause", MENTOR)
    refused = refusal(app, ref, "accept", MENTOR)
    assert refused.rule == "mentor_listed"
    assert "paused" in refused.reason
    with app.unit() as tx:
        assert case_of(tx, ref).state == "requested"
        assert count_events(tx, ref) == 1


def test_accept_is_refused_when_the_mentor_has_no_free_place(app: App, clock: ManualClock) -> None:
    list_mentor(app, clock, MENTOR, "Mari Mets", capacity=1)
    first = request(app, mentee=OTHER_MENTEE)
    second = request(app)
    step(app, first, "accept", MENTOR)
    refused = refusal(app, second, "accept", MENTOR)
    assert refused.rule == "mentor_has_capacity"
    assert "all 1 taken" in refused.reason
    assert state_of(app, second) == "requested"


def test_mentor_declines_a_request_and_the_mentee_is_told(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    step(app, ref, "decline", MENTOR, reason="Mul pole praegu aega.")
    with app.unit() as tx:
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "declined"
        assert (event.trigger, event.from_state, event.actor_role) == (
            "decline",
            "requested",
            "mentor",
        )
        assert (event.comment, event.party_text) == ("", "Mul pole praegu aega.")
        assert emails_of(tx, event) == [("request_declined", MENTEE)]


def test_the_system_expires_an_unanswered_request_telling_mentee_and_coordinators(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    clock.advance(days=10)
    step(app, ref, "expire", None)
    with app.unit() as tx:
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "expired"
        assert (event.actor_id, event.actor_role) == (None, "system")
        assert emails_of(tx, event) == [
            ("request_expired", MENTEE),
            ("request_expired", COORDINATOR),
        ]


def test_a_person_cannot_expire_a_request(app: App, clock: ManualClock, mentor: str) -> None:
    ref = request(app)
    clock.advance(days=10)
    for person in (MENTOR, MENTEE, COORDINATOR):
        refused = refusal(app, ref, "expire", person)
        assert refused.rule == "role"
        assert "system" in refused.reason
    assert state_of(app, ref) == "requested"


# -- first meeting ---------------------------------------------------------------------------


def test_scheduling_a_meeting_asks_whether_to_go_on_two_hours_after_it_starts(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    starts_at = clock.now + timedelta(days=3)
    step(app, ref, "schedule_meeting", MENTEE, starts_at=starts_at, place="Pärnu, Rüütli 1")
    with app.unit() as tx:
        event = last_event(tx, ref)
        meetings = tx.session.scalars(
            select(Meeting).where(Meeting.relation_id == relation_of(tx, ref).id)
        ).all()
        assert case_of(tx, ref).state == "first_meeting"
        assert [(m.starts_at, m.place) for m in meetings] == [(starts_at, "Pärnu, Rüütli 1")]
        assert (event.trigger, event.from_state, event.to_state) == (
            "schedule_meeting",
            "first_meeting",
            "first_meeting",
        )
        assert emails_of(tx, event) == to_both("meeting_scheduled")
        assert pending_timers(tx, ref)["go_on_question"] == starts_at + timedelta(hours=2)


def test_scheduling_the_first_meeting_cancels_the_meeting_date_reminder(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    step(app, ref, "schedule_meeting", MENTOR, starts_at=clock.now + timedelta(days=3), place="x")
    with app.unit() as tx:
        assert "meeting_date_missing" not in pending_timers(tx, ref)


def test_scheduling_an_earlier_meeting_moves_the_go_on_question_to_it(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    later, earlier = clock.now + timedelta(days=5), clock.now + timedelta(days=3)
    step(app, ref, "schedule_meeting", MENTOR, starts_at=later, place="x")
    step(app, ref, "schedule_meeting", MENTEE, starts_at=earlier, place="y")
    with app.unit() as tx:
        assert pending_timers(tx, ref)["go_on_question"] == earlier + timedelta(hours=2)


def test_proceed_is_refused_before_the_first_meeting_has_taken_place(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    refused = refusal(app, ref, "proceed", MENTEE)
    assert refused.rule == "first_meeting_held"
    step(app, ref, "schedule_meeting", MENTOR, starts_at=clock.now + timedelta(hours=1), place="x")
    refused = refusal(app, ref, "proceed", MENTOR)
    assert refused.rule == "first_meeting_held"
    with app.unit() as tx:
        relation = relation_of(tx, ref)
        assert relation.mentor_goes_on_at is None
        assert relation.mentee_goes_on_at is None


def test_one_party_going_on_keeps_the_relation_in_first_meeting(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    step(app, ref, "schedule_meeting", MENTOR, starts_at=clock.now + timedelta(days=2), place="x")
    clock.advance(days=3)
    step(app, ref, "proceed", MENTEE)
    with app.unit() as tx:
        relation = relation_of(tx, ref)
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "first_meeting"
        assert relation.mentee_goes_on_at == clock.now
        assert relation.mentor_goes_on_at is None
        assert (event.trigger, event.to_state, event.actor_role) == (
            "proceed",
            "first_meeting",
            "mentee",
        )


def test_both_parties_going_on_moves_the_relation_to_agreement(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    step(app, ref, "schedule_meeting", MENTOR, starts_at=clock.now + timedelta(days=2), place="x")
    clock.advance(days=3)
    step(app, ref, "proceed", MENTEE)
    step(app, ref, "proceed", MENTOR)
    with app.unit() as tx:
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "agreement"
        assert (event.from_state, event.to_state) == ("first_meeting", "agreement")
        assert emails_of(tx, event) == to_both("agreement_invitation")
        assert pending_timers(tx, ref) == {"agreement_unsigned": clock.now + timedelta(days=14)}


def test_coordinator_cannot_go_on_for_the_parties(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    assert refusal(app, ref, "proceed", COORDINATOR).rule == "role"


def test_discontinue_closes_the_relation_as_not_continued(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    step(app, ref, "discontinue", MENTOR, reason="Ei sobinud.")
    with app.unit() as tx:
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "closed"
        assert relation_of(tx, ref).outcome == "not_continued"
        assert (event.trigger, event.from_state, event.to_state) == (
            "discontinue",
            "first_meeting",
            "closed",
        )
        assert emails_of(tx, event) == to_both("feedback_request")
        assert pending_timers(tx, ref) == {}


# -- agreement -------------------------------------------------------------------------------


@pytest.mark.parametrize("party", [MENTOR, MENTEE])
def test_either_party_drafts_agreement_version_one(
    app: App, clock: ManualClock, mentor: str, party: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    draft(app, ref, party, fee="")
    with app.unit() as tx:
        (agreement,) = agreements_of(tx, ref)
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "agreement"
        assert agreement.version == 1
        assert agreement.question == relation_of(tx, ref).question
        assert (agreement.goal, agreement.meeting_rhythm, agreement.fee) == (
            "Selge karjääriplaan",
            "kord kuus",
            "",
        )
        assert (agreement.starts_on, agreement.ends_on) == (date(2026, 10, 1), date(2027, 4, 5))
        assert agreement.confidentiality is True
        assert signers(agreement) == set()
        assert emails_of(tx, event) == to_both("agreement_drafted")


def test_draft_agreement_requires_each_of_its_fields(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    for missing in ("goal", "starts_on", "ends_on", "meeting_rhythm", "confidentiality"):
        with pytest.raises(InvalidInput) as caught:
            draft(app, ref, **{missing: None})
        assert caught.value.field == missing
    with app.unit() as tx:
        assert agreements_of(tx, ref) == []


def test_agreement_must_end_after_it_starts(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "agreement")
    for ends_on in (date(2026, 9, 30), date(2026, 10, 1)):
        with pytest.raises(Refused) as caught:
            draft(app, ref, starts_on=date(2026, 10, 1), ends_on=ends_on)
        assert caught.value.rule == "time_frame"
    with app.unit() as tx:
        assert agreements_of(tx, ref) == []


def test_agreement_without_confidentiality_is_refused(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    with pytest.raises(Refused) as caught:
        draft(app, ref, confidentiality=False)
    assert caught.value.rule == "confidentiality"
    with app.unit() as tx:
        assert agreements_of(tx, ref) == []


def test_redrafting_the_agreement_clears_the_earlier_signatures(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    draft(app, ref)
    step(app, ref, "sign", MENTOR)
    draft(app, ref, MENTEE, goal="Uus eesmärk")
    with app.unit() as tx:
        (agreement,) = agreements_of(tx, ref)
        assert agreement.goal == "Uus eesmärk"
        assert signers(agreement) == set()
    step(app, ref, "sign", MENTEE)
    assert state_of(app, ref) == "agreement"


def test_saving_an_unchanged_draft_again_is_refused_and_keeps_the_signature(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    draft(app, ref)
    step(app, ref, "sign", MENTOR)
    with app.unit() as tx:
        events = len(tx.session.scalars(select(AuditEvent)).all())

    refused = refusal(
        app,
        ref,
        "draft_agreement",
        MENTEE,
        goal="Selge karjääriplaan",
        starts_on=date(2026, 10, 1),
        ends_on=date(2027, 4, 5),
        meeting_rhythm="kord kuus",
        fee="tasuta",
        confidentiality=True,
    )
    assert refused.rule == "draft_unchanged"
    with app.unit() as tx:
        (agreement,) = agreements_of(tx, ref)
        assert signers(agreement) == {"mentor"}
        assert len(tx.session.scalars(select(AuditEvent)).all()) == events
    step(app, ref, "sign", MENTEE)
    assert state_of(app, ref) == "active"


def test_signing_before_a_draft_is_refused(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "agreement")
    refused = refusal(app, ref, "sign", MENTOR)
    assert refused.rule == "agreement_drafted"
    assert state_of(app, ref) == "agreement"


def test_one_signature_keeps_the_relation_in_agreement(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    draft(app, ref)
    step(app, ref, "sign", MENTEE)
    with app.unit() as tx:
        (agreement,) = agreements_of(tx, ref)
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "agreement"
        assert signers(agreement) == {"mentee"}
        assert (event.trigger, event.to_state) == ("sign", "agreement")
        assert "agreement_unsigned" in pending_timers(tx, ref)


def test_both_signatures_make_the_relation_active_with_check_in_and_ending_reminders(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    # The agreement ends after summer time starts (28 March 2027); its reminder is before.
    draft(app, ref, starts_on=date(2026, 10, 1), ends_on=date(2027, 4, 5))
    step(app, ref, "sign", MENTEE)
    clock.advance(hours=3)
    step(app, ref, "sign", MENTOR)
    with app.unit() as tx:
        (agreement,) = agreements_of(tx, ref)
        event = last_event(tx, ref)
        timers = pending_timers(tx, ref)
        assert case_of(tx, ref).state == "active"
        assert signers(agreement) == {"mentor", "mentee"}
        assert (event.from_state, event.to_state) == ("agreement", "active")
        assert emails_of(tx, event) == to_both("agreement_signed")
        assert set(timers) == {"check_in", "agreement_ending"}
        assert timers["check_in"] == clock.now + timedelta(days=30)
        assert timers["agreement_ending"].astimezone(TALLINN).replace(tzinfo=None) == (
            datetime.combine(date(2027, 3, 22), time(9, 0))
        )


def test_the_same_party_cannot_sign_twice(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "agreement")
    draft(app, ref)
    step(app, ref, "sign", MENTOR)
    refused = refusal(app, ref, "sign", MENTOR)
    assert refused.rule == "already_signed"
    with app.unit() as tx:
        (agreement,) = agreements_of(tx, ref)
        assert len(agreement.signatures) == 1


# -- reframe ---------------------------------------------------------------------------------


def test_reframing_adds_version_two_and_keeps_version_one_signed(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "active")
    with app.unit() as tx:
        first_question = agreements_of(tx, ref)[0].question
    step(app, ref, "reframe", MENTOR, question="Kuidas toetada meeskonda muudatuses?")
    with app.unit() as tx:
        first, second = agreements_of(tx, ref)
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "reframed"
        assert (event.trigger, event.from_state, event.to_state) == (
            "reframe",
            "active",
            "reframed",
        )
        assert emails_of(tx, event) == to_both("agreement_reframed")
        assert (first.version, first.question) == (1, first_question)
        assert signers(first) == {"mentor", "mentee"}
        assert (second.version, second.question) == (2, "Kuidas toetada meeskonda muudatuses?")
        assert (second.goal, second.ends_on) == (first.goal, first.ends_on)
        assert signers(second) == set()
        assert pending_timers(tx, ref) == {"agreement_unsigned": clock.now + timedelta(days=14)}


def test_signing_the_reframed_version_makes_the_relation_active_again(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "reframed")
    draft(app, ref, MENTOR, ends_on=date(2027, 6, 30), question="Uus küsimus")
    step(app, ref, "sign", MENTOR)
    with app.unit() as tx:
        first, second = agreements_of(tx, ref)
        assert case_of(tx, ref).state == "reframed"
        assert signers(first) == {"mentor", "mentee"}
        assert signers(second) == {"mentor"}
        assert second.question == "Uus küsimus"
    step(app, ref, "sign", MENTEE)
    with app.unit() as tx:
        first, second = agreements_of(tx, ref)
        timers = pending_timers(tx, ref)
        assert case_of(tx, ref).state == "active"
        assert signers(first) == signers(second) == {"mentor", "mentee"}
        assert timers["agreement_ending"].astimezone(TALLINN).replace(tzinfo=None) == (
            datetime.combine(date(2027, 6, 16), time(9, 0))
        )


# -- meetings, close, cancel -----------------------------------------------------------------


def test_logging_a_meeting_records_it_and_keeps_the_state(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "active")
    held_at = clock.now - timedelta(days=1)
    step(app, ref, "log_meeting", MENTEE, starts_at=held_at, notes="Arutasime plaani.")
    with app.unit() as tx:
        event = last_event(tx, ref)
        meeting = tx.session.scalar(
            select(Meeting).where(
                Meeting.relation_id == relation_of(tx, ref).id, Meeting.starts_at == held_at
            )
        )
        assert case_of(tx, ref).state == "active"
        assert meeting is not None
        assert meeting.notes == "Arutasime plaani."
        assert (event.trigger, event.to_state) == ("log_meeting", "active")
        assert emails_of(tx, event) == []


@pytest.mark.parametrize(
    ("outcome", "actor"), [("completed", MENTEE), ("ended_early", COORDINATOR)]
)
def test_close_records_the_outcome_and_asks_both_for_feedback(
    app: App, clock: ManualClock, mentor: str, outcome: str, actor: str
) -> None:
    ref = relation_in(app, clock, "active")
    step(app, ref, "close", actor, outcome=outcome)
    with app.unit() as tx:
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "closed"
        assert relation_of(tx, ref).outcome == outcome
        assert (event.from_state, event.to_state) == ("active", "closed")
        assert emails_of(tx, event) == to_both("feedback_request")


def test_close_needs_an_outcome_from_its_choices(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "active")
    for outcome in (None, "", "cancelled", "great"):
        with pytest.raises(InvalidInput) as caught:
            step(app, ref, "close", MENTEE, outcome=outcome)
        assert caught.value.field == "outcome"
    assert state_of(app, ref) == "active"


@pytest.mark.parametrize(
    ("state", "actor"),
    [("requested", MENTEE), ("first_meeting", COORDINATOR), ("agreement", MENTEE)],
)
def test_mentee_or_coordinator_cancels_a_relation_before_it_is_active(
    app: App, clock: ManualClock, mentor: str, state: str, actor: str
) -> None:
    ref = relation_in(app, clock, state)
    step(app, ref, "cancel", actor, reason="Olukord muutus.")
    with app.unit() as tx:
        event = last_event(tx, ref)
        assert case_of(tx, ref).state == "closed"
        assert relation_of(tx, ref).outcome == "cancelled"
        assert (event.trigger, event.from_state, event.to_state) == ("cancel", state, "closed")
        # The mentee's reason is for the parties; a coordinator's stays for the staff.
        expected = ("", "Olukord muutus.") if actor == MENTEE else ("Olukord muutus.", "")
        assert (event.comment, event.party_text) == expected
        assert pending_timers(tx, ref) == {}
        # Both are told; nobody is asked for feedback on mentoring that never began.
        assert emails_of(tx, event) == to_both("relation_cancelled")


def test_the_mentor_cannot_cancel(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "first_meeting")
    refused = refusal(app, ref, "cancel", MENTOR)
    assert refused.rule == "role"
    assert state_of(app, ref) == "first_meeting"


# -- feedback --------------------------------------------------------------------------------


def test_each_party_gives_feedback_once_closed(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "closed")
    step(app, ref, "give_feedback", MENTEE, rating=5, comment="Väga kasulik.")
    step(app, ref, "give_feedback", MENTOR, rating=4)
    with app.unit() as tx:
        rows = tx.session.execute(
            select(Person.email, Feedback.rating, Feedback.comment)
            .join(Person, Person.id == Feedback.person_id)
            .where(Feedback.relation_id == relation_of(tx, ref).id)
        ).all()
        assert sorted(tuple(row) for row in rows) == [
            (MENTEE, 5, "Väga kasulik."),
            (MENTOR, 4, ""),
        ]
        assert case_of(tx, ref).state == "closed"
        assert last_event(tx, ref).trigger == "give_feedback"


def test_feedback_rating_outside_one_to_five_is_refused(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "closed")
    for rating in (0, 6, -3):
        with pytest.raises(InvalidInput) as caught:
            step(app, ref, "give_feedback", MENTEE, rating=rating)
        assert caught.value.field == "rating"
    with app.unit() as tx:
        assert tx.session.scalar(select(func.count()).select_from(Feedback)) == 0


def test_giving_feedback_twice_is_refused(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "closed")
    step(app, ref, "give_feedback", MENTOR, rating=3)
    refused = refusal(app, ref, "give_feedback", MENTOR, rating=5)
    assert refused.rule == "feedback_given"
    with app.unit() as tx:
        assert tx.session.scalars(select(Feedback.rating)).all() == [3]


def test_coordinator_cannot_give_feedback(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "closed")
    assert refusal(app, ref, "give_feedback", COORDINATOR, rating=5).rule == "role"


def test_feedback_before_the_relation_is_closed_is_refused(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "active")
    assert refusal(app, ref, "give_feedback", MENTEE, rating=5).rule == "state"


# -- terminal states and input -----------------------------------------------------------------


@pytest.mark.parametrize("state", ["closed", "declined", "expired"])
def test_a_terminal_state_leaves_no_pending_timers(
    app: App, clock: ManualClock, mentor: str, state: str
) -> None:
    ref = relation_in(app, clock, state)
    with app.unit() as tx:
        assert case_of(tx, ref).state == state
        assert pending_timers(tx, ref) == {}
        assert tx.session.scalar(
            select(func.count()).select_from(Timer).where(Timer.case_id == case_of(tx, ref).id)
        )  # the timers of the earlier states exist, cancelled


TERMINAL_ATTEMPTS: dict[str, list[tuple[str, str | None, dict[str, Any]]]] = {
    "closed": [
        ("close", MENTEE, {"outcome": "completed"}),
        ("cancel", COORDINATOR, {}),
        ("reframe", MENTOR, {"question": "Uus küsimus"}),
    ],
    "declined": [("accept", MENTOR, {}), ("decline", MENTOR, {}), ("cancel", MENTEE, {})],
    "expired": [("accept", MENTOR, {}), ("expire", None, {}), ("cancel", COORDINATOR, {})],
}


@pytest.mark.parametrize("state", list(TERMINAL_ATTEMPTS))
def test_a_state_changing_step_from_a_terminal_state_is_refused(
    app: App, clock: ManualClock, mentor: str, state: str
) -> None:
    ref = relation_in(app, clock, state)
    with app.unit() as tx:
        events_before = count_events(tx, ref)
    for trigger, actor, values in TERMINAL_ATTEMPTS[state]:
        refused = refusal(app, ref, trigger, actor, **values)
        assert refused.rule == "state"
        assert f"'{trigger}' is not possible in state '{state}'" in refused.reason
    with app.unit() as tx:
        assert case_of(tx, ref).state == state
        assert count_events(tx, ref) == events_before
        assert pending_timers(tx, ref) == {}


def test_an_unknown_field_is_refused_naming_it(app: App, clock: ManualClock, mentor: str) -> None:
    ref = request(app)
    with pytest.raises(InvalidInput) as caught:
        step(app, ref, "decline", MENTOR, reason="Ei saa.", colour="blue")
    assert caught.value.field == "colour"
    with app.unit() as tx:
        assert case_of(tx, ref).state == "requested"
        assert count_events(tx, ref) == 1
