"""The mentor application workflow through the service path: every step and every refusal.

Each test drives a real case with `lifecycle.services` / `lifecycle.scenarios` on SQLite and
PostgreSQL (the `app` fixture), then reads the rows a step must write — state, audit event,
timers, outbox — in a fresh transaction. The qualification rules are also checked on their own.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from lifecycle.bootstrap import App
from lifecycle.cases import services
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import InvalidInput, Refused
from lifecycle.store.models import (
    Application,
    AuditEvent,
    Case,
    CommitteeVote,
    Credential,
    IntakeRound,
    MentorProfile,
    OutboxMessage,
    Person,
    Timer,
)
from lifecycle.workflows.qualifications import (
    credential_rule,
    degree_rule,
    evaluate,
    experience_rule,
    manager_rule,
)
from tests.conftest import COMMITTEE, COORDINATOR, bring

APPLICANT = "mari.maasikas@example.ee"
STRANGER = "peeter.pakk@example.ee"
OPEN_STATES = ["submitted", "eligibility", "awaiting_info", "interview"]


# -- helpers ---------------------------------------------------------------------------------


def open_round(app: App, clock: ManualClock) -> int:
    """An intake round open now (opened yesterday, closes in a month)."""
    with app.unit() as tx:
        intake = IntakeRound(
            name="Sügis 2026",
            opens_at=clock.now - timedelta(days=1),
            closes_at=clock.now + timedelta(days=30),
            cancelled_at=None,
        )
        tx.session.add(intake)
        tx.session.flush()
        return intake.id


def submit(app: App, *, actor: str | None = None, email: str = APPLICANT, **overrides: Any) -> str:
    return scenarios.submit_application(
        app, scenarios.applicant(email, "Mari Maasikas", **overrides), actor=actor
    )


def step(
    app: App, ref: str, trigger: str, actor: str | None, *, override: str = "", **values: Any
) -> AuditEvent:
    with app.unit() as tx:
        return services.advance_case(
            tx,
            ref=ref,
            trigger=trigger,
            actor_email=actor,
            values=values,
            override_reason=override,
        )


def snapshot(app: App, ref: str) -> tuple[Any, ...]:
    """Everything a step may change on a case, to show a refusal changed nothing."""
    case_id = number(ref)
    with app.unit() as tx:
        case = tx.session.get(Case, case_id)
        assert case is not None
        application = tx.session.scalar(select(Application).where(Application.case_id == case_id))
        assert application is not None
        return (
            case.state,
            case.version,
            len(events(tx, ref)),
            sorted((t.name, t.status, t.due_at) for t in timers_of(tx, ref)),
            len(outbox(tx, ref)),
            application.interview_at,
            sorted((v.member_id, v.vote) for v in application.votes),
            sorted((e.kind, e.verified_at) for e in application.evidence),
        )


def refuse(
    app: App, ref: str, trigger: str, actor: str | None, *, override: str = "", **values: Any
) -> Refused:
    """Fire a step that must be refused; check that it left the case exactly as it was."""
    before = snapshot(app, ref)
    with pytest.raises(Refused) as info:
        step(app, ref, trigger, actor, override=override, **values)
    assert snapshot(app, ref) == before
    return info.value


def number(ref: str) -> int:
    return int(ref.rpartition("-")[2])


def state_of(app: App, ref: str) -> str:
    with app.unit() as tx:
        return state_in(tx, ref)


def state_in(tx: Any, ref: str) -> str:
    case = tx.session.get(Case, number(ref))
    assert case is not None
    return str(case.state)


def events(tx: Any, ref: str) -> list[AuditEvent]:
    return list(
        tx.session.scalars(
            select(AuditEvent).where(AuditEvent.case_id == number(ref)).order_by(AuditEvent.id)
        )
    )


def timers_of(tx: Any, ref: str, name: str | None = None) -> list[Timer]:
    query = select(Timer).where(Timer.case_id == number(ref)).order_by(Timer.id)
    if name:
        query = query.where(Timer.name == name)
    return list(tx.session.scalars(query))


def outbox(tx: Any, ref: str, template: str | None = None) -> list[str]:
    """The recipients' emails of the queued messages, in order (of one template, if given)."""
    query = (
        select(Person.email)
        .join(OutboxMessage, OutboxMessage.to_person_id == Person.id)
        .where(OutboxMessage.case_id == number(ref))
        .order_by(OutboxMessage.id)
    )
    if template:
        query = query.where(OutboxMessage.template == template)
    return list(tx.session.scalars(query))


def person_id(tx: Any, email: str) -> int:
    found = tx.session.scalar(select(Person.id).where(Person.email == email))
    assert found is not None
    return int(found)


def application_of(tx: Any, ref: str) -> Application:
    application = tx.session.scalar(select(Application).where(Application.case_id == number(ref)))
    assert application is not None
    return application


def schedule(app: App, ref: str, at: datetime, committee: list[str] = COMMITTEE) -> None:
    step(
        app,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=at,
        place="Tallinn, Lastekodu 12",
        committee=committee,
    )


def hold_interview(app: App, clock: ManualClock, ref: str, votes: list[str | None]) -> datetime:
    """Schedule the interview in 5 days, move past it, let each panel member vote (None: not)."""
    at = clock.now + timedelta(days=5)
    schedule(app, ref, at)
    clock.now = at + timedelta(hours=2)
    for member, vote in zip(COMMITTEE, votes, strict=True):
        if vote is not None:
            step(app, ref, "record_vote", member, vote=vote, notes="")
    return at


def verify_all(app: App, ref: str) -> None:
    for kind in ("degree", "experience", "credential"):
        step(app, ref, "verify_evidence", COORDINATOR, kind=kind)


def add_stranger(app: App, clock: ManualClock) -> None:
    with app.unit() as tx:
        tx.session.add(
            Person(
                name="Peeter Pakk",
                email=STRANGER,
                role=None,
                language="et",
                organisation="",
                region="",
                created_at=clock.now,
            )
        )


@pytest.fixture
def ref(app: App, clock: ManualClock) -> str:
    """A fully qualified application, submitted by the applicant inside an open round."""
    open_round(app, clock)
    return submit(app)


# -- submit ----------------------------------------------------------------------------------


def test_applicant_submits_inside_an_open_round_and_gets_a_receipt_and_a_review_timer(
    app: App, clock: ManualClock
) -> None:
    round_id = open_round(app, clock)

    ref = submit(app)

    with app.unit() as tx:
        applicant_id = person_id(tx, APPLICANT)
        case = tx.session.get(Case, number(ref))
        assert case is not None and case.state == "submitted"
        assert case.workflow == "mentor_application"
        application = application_of(tx, ref)
        assert application.person_id == applicant_id
        assert application.intake_round_id == round_id
        assert application.submitted_at == clock.now
        assert sorted(e.kind for e in application.evidence) == [
            "credential",
            "degree",
            "experience",
        ]
        assert all(e.verified_at is None for e in application.evidence)
        [event] = events(tx, ref)
        assert (event.trigger, event.from_state, event.to_state) == ("submit", None, "submitted")
        assert (event.actor_id, event.actor_role, event.at) == (
            applicant_id,
            "applicant",
            clock.now,
        )
        assert case.entry_event_id == event.id
        assert outbox(tx, ref) == [APPLICANT]
        assert outbox(tx, ref, "application_received") == [APPLICANT]
        [timer] = timers_of(tx, ref)
        assert (timer.name, timer.status, timer.state) == ("review_overdue", "pending", "submitted")
        assert timer.due_at == clock.now + timedelta(days=7)
        assert timer.entry_event_id == event.id


def test_submit_outside_any_round_is_refused_with_the_next_rounds_dates_and_writes_nothing(
    app: App, clock: ManualClock
) -> None:
    with app.unit() as tx:
        tx.session.add_all(
            [
                IntakeRound(  # closed in the spring
                    name="Kevad 2026",
                    opens_at=datetime.fromisoformat("2026-03-01T08:00+00:00"),
                    closes_at=datetime.fromisoformat("2026-03-31T20:00+00:00"),
                    cancelled_at=None,
                ),
                IntakeRound(  # the next one: 10:00 and 23:00 in Tallinn
                    name="Kevad 2027",
                    opens_at=datetime.fromisoformat("2027-03-01T08:00+00:00"),
                    closes_at=datetime.fromisoformat("2027-03-31T20:00+00:00"),
                    cancelled_at=None,
                ),
            ]
        )

    with pytest.raises(Refused) as info:
        submit(app)

    assert info.value.rule == "intake_round_open"
    assert "01.03.2027" in info.value.reason
    assert "31.03.2027" in info.value.reason
    with app.unit() as tx:
        assert tx.session.scalar(select(Person).where(Person.email == APPLICANT)) is None
        assert tx.session.scalar(select(func.count()).select_from(Case)) == 0
        assert tx.session.scalar(select(func.count()).select_from(MentorProfile)) == 0
        assert tx.session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


def test_submit_when_no_round_is_scheduled_says_none_is_scheduled(app: App) -> None:
    with pytest.raises(Refused) as info:
        submit(app)

    assert info.value.rule == "intake_round_open"
    assert "none is scheduled" in info.value.reason


def test_a_cancelled_round_accepts_no_applications(app: App, clock: ManualClock) -> None:
    open_round(app, clock)
    with app.unit() as tx:
        for intake in tx.session.scalars(select(IntakeRound)):
            intake.cancelled_at = clock.now

    with pytest.raises(Refused) as info:
        submit(app)

    assert info.value.rule == "intake_round_open"


def test_coordinator_enters_an_application_outside_any_round(app: App, clock: ManualClock) -> None:
    ref = submit(app, actor=COORDINATOR)

    with app.unit() as tx:
        [event] = events(tx, ref)
        assert (event.from_state, event.to_state) == (None, "submitted")
        assert (event.actor_id, event.actor_role) == (person_id(tx, COORDINATOR), "coordinator")
        assert application_of(tx, ref).intake_round_id is None
        assert application_of(tx, ref).person_id == person_id(tx, APPLICANT)
        assert outbox(tx, ref, "application_received") == [APPLICANT]
        assert [t.name for t in timers_of(tx, ref)] == ["review_overdue"]


def test_a_second_open_application_by_the_same_person_is_refused(app: App, ref: str) -> None:
    with pytest.raises(Refused) as info:
        submit(app, years_in_social_field=13)

    assert info.value.rule == "one_open_application"
    assert ref in info.value.reason
    with app.unit() as tx:
        assert tx.session.scalar(select(func.count()).select_from(Case)) == 1
        stored = tx.session.scalar(select(MentorProfile))
        assert stored is not None and stored.years_in_social_field == 12


def test_a_new_application_is_accepted_once_the_previous_one_was_withdrawn(
    app: App, ref: str
) -> None:
    step(app, ref, "withdraw", APPLICANT)

    second = submit(app)

    assert second != ref
    assert state_of(app, second) == "submitted"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "mari.maasikas-at-example.ee"}, "email"),
        ({"topics": ["career", "knitting"]}, "topics"),
        ({"years_in_social_field": None}, "years_in_social_field"),
        ({"credentials": [{"kind": "guru", "issuer": "X", "year": 2020}]}, "credentials[0].kind"),
    ],
    ids=["bad-email", "unknown-topic", "missing-years", "credential-kind"],
)
def test_invalid_application_input_is_refused_naming_the_field(
    app: App, clock: ManualClock, overrides: dict[str, Any], field: str
) -> None:
    open_round(app, clock)

    with pytest.raises(InvalidInput) as info:
        submit(app, **overrides)

    assert info.value.field == field
    with app.unit() as tx:
        assert tx.session.scalar(select(func.count()).select_from(Case)) == 0


# -- begin_review, request_info, provide_info --------------------------------------------------


def test_coordinator_begins_review_and_the_review_timer_is_cancelled(
    app: App, clock: ManualClock, ref: str
) -> None:
    clock.advance(days=2)

    step(app, ref, "begin_review", COORDINATOR)

    with app.unit() as tx:
        assert state_in(tx, ref) == "eligibility"
        event = events(tx, ref)[-1]
        assert (event.trigger, event.from_state, event.to_state) == (
            "begin_review",
            "submitted",
            "eligibility",
        )
        assert (event.actor_id, event.actor_role) == (person_id(tx, COORDINATOR), "coordinator")
        [timer] = timers_of(tx, ref)
        assert (timer.name, timer.status, timer.finished_at) == (
            "review_overdue",
            "cancelled",
            clock.now,
        )


def test_committee_member_cannot_begin_review(app: App, ref: str) -> None:
    refusal = refuse(app, ref, "begin_review", COMMITTEE[0])

    assert refusal.rule == "role"
    assert "coordinator" in refusal.reason


def test_a_step_from_the_wrong_state_is_refused_naming_the_possible_steps(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)

    refusal = refuse(app, ref, "begin_review", COORDINATOR)

    assert refusal.rule == "state"
    assert "'eligibility'" in refusal.reason
    for trigger in ("mark_eligible", "mark_ineligible", "request_info", "verify_evidence"):
        assert trigger in refusal.reason


def test_request_info_waits_for_the_applicant_with_a_reminder_and_a_withdraw_timer(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)
    clock.advance(days=1)

    step(app, ref, "request_info", COORDINATOR, message="Palun saatke diplomi koopia.")

    with app.unit() as tx:
        assert state_in(tx, ref) == "awaiting_info"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == ("eligibility", "awaiting_info")
        assert event.comment == "Palun saatke diplomi koopia."
        assert outbox(tx, ref, "info_requested") == [APPLICANT]
        pending = {t.name: t.due_at for t in timers_of(tx, ref) if t.status == "pending"}
        assert pending == {
            "info_reminder": clock.now + timedelta(days=7),
            "withdraw": clock.now + timedelta(days=30),
        }


def test_request_info_without_a_message_is_invalid(app: App, clock: ManualClock, ref: str) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)

    with pytest.raises(InvalidInput) as info:
        step(app, ref, "request_info", COORDINATOR)

    assert info.value.field == "message"
    assert state_of(app, ref) == "eligibility"


def test_providing_info_returns_to_eligibility_and_cancels_the_info_timers(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "awaiting_info", APPLICANT)
    clock.advance(days=3)

    step(app, ref, "provide_info", APPLICANT, message="Diplom on lisatud.")

    with app.unit() as tx:
        assert state_in(tx, ref) == "eligibility"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == ("awaiting_info", "eligibility")
        assert (event.actor_role, event.comment) == ("applicant", "Diplom on lisatud.")
        info_timers = {
            t.name: (t.status, t.finished_at)
            for t in timers_of(tx, ref)
            if t.state == "awaiting_info"
        }
        assert info_timers == {
            "info_reminder": ("cancelled", clock.now),
            "withdraw": ("cancelled", clock.now),
        }
        assert not [t for t in timers_of(tx, ref) if t.status == "pending"]


def test_the_system_withdraws_an_application_left_awaiting_info(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "awaiting_info", APPLICANT)
    clock.advance(days=30)

    step(app, ref, "withdraw", None)

    with app.unit() as tx:
        assert state_in(tx, ref) == "withdrawn"
        event = events(tx, ref)[-1]
        assert (event.actor_id, event.actor_role) == (None, "system")
        assert (event.from_state, event.to_state) == ("awaiting_info", "withdrawn")
        assert outbox(tx, ref, "application_withdrawn") == [APPLICANT]
        assert not [t for t in timers_of(tx, ref) if t.status == "pending"]


# -- verify_evidence, mark_eligible, mark_ineligible -----------------------------------------


def test_verifying_evidence_records_who_and_when_and_keeps_the_state(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)

    step(app, ref, "verify_evidence", COORDINATOR, kind="degree")

    with app.unit() as tx:
        assert state_in(tx, ref) == "eligibility"
        verified = {
            e.kind: (e.verified_by_id, e.verified_at) for e in application_of(tx, ref).evidence
        }
        assert verified == {
            "degree": (person_id(tx, COORDINATOR), clock.now),
            "experience": (None, None),
            "credential": (None, None),
        }
        event = events(tx, ref)[-1]
        assert (event.trigger, event.from_state, event.to_state) == (
            "verify_evidence",
            "eligibility",
            "eligibility",
        )


def test_verifying_evidence_that_was_not_declared_is_refused(app: App, clock: ManualClock) -> None:
    open_round(app, clock)
    ref = submit(app, credentials=[])
    bring(app, clock, ref, "eligibility", APPLICANT)

    refusal = refuse(app, ref, "verify_evidence", COORDINATOR, kind="credential")

    assert refusal.rule == "evidence"


def test_verifying_an_unknown_kind_of_evidence_is_invalid(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)

    with pytest.raises(InvalidInput) as info:
        step(app, ref, "verify_evidence", COORDINATOR, kind="horoscope")

    assert info.value.field == "kind"


def test_mark_eligible_is_refused_while_evidence_is_unverified(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)
    step(app, ref, "verify_evidence", COORDINATOR, kind="degree")

    refusal = refuse(app, ref, "mark_eligible", COORDINATOR)

    assert refusal.rule == "qualifications_met"
    assert "evidence not yet verified: experience, credential" in refusal.reason


def test_mark_eligible_with_every_rule_passing_and_verified_goes_to_interview(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)
    verify_all(app, ref)

    step(app, ref, "mark_eligible", COORDINATOR)

    with app.unit() as tx:
        assert state_in(tx, ref) == "interview"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state, event.comment) == (
            "eligibility",
            "interview",
            "",
        )
        assert outbox(tx, ref, "application_eligible") == [APPLICANT]
        # The interview timers count from the interview, which is not scheduled yet.
        assert not [t for t in timers_of(tx, ref) if t.status == "pending"]


@pytest.mark.parametrize(
    ("overrides", "explanation"),
    [
        (
            {
                "degree_level": "master",
                "degree_field": "psühholoogia",
                "degree_in_social_work": False,
            },
            "the master's degree (psühholoogia) is not in social work",
        ),
        (
            {"degree_level": "none", "degree_field": "", "degree_in_social_work": False},
            "no bachelor's degree in social work declared",
        ),
        (
            {"years_in_social_field": 4},
            "4 years in the social field (fewer than the 5 required)",
        ),
        (
            {
                "credentials": [
                    {"kind": "coach", "issuer": "ICF", "year": 2015, "valid_until": "2026-08-31"}
                ]
            },
            "the declared certificates have expired",
        ),
    ],
    ids=["degree-other-field", "no-degree", "four-years", "expired-credential"],
)
def test_mark_eligible_is_refused_when_a_rule_fails_and_names_what_failed(
    app: App, clock: ManualClock, overrides: dict[str, Any], explanation: str
) -> None:
    open_round(app, clock)
    ref = submit(app, **overrides)
    bring(app, clock, ref, "eligibility", APPLICANT)
    verify_all(app, ref)

    refusal = refuse(app, ref, "mark_eligible", COORDINATOR)

    assert refusal.rule == "qualifications_met"
    assert refusal.reason == f"qualification rules not met: {explanation}"


def test_a_bachelor_in_social_work_with_five_years_is_eligible_without_mentoring_managers(
    app: App, clock: ManualClock
) -> None:
    open_round(app, clock)
    ref = submit(app, degree_level="bachelor", years_in_social_field=5)
    bring(app, clock, ref, "eligibility", APPLICANT)
    verify_all(app, ref)

    step(app, ref, "mark_eligible", COORDINATOR)

    assert state_of(app, ref) == "interview"


def test_coordinator_overrides_a_failed_rule_with_a_written_reason(
    app: App, clock: ManualClock
) -> None:
    open_round(app, clock)
    ref = submit(app, years_in_social_field=4)
    bring(app, clock, ref, "eligibility", APPLICANT)

    step(app, ref, "mark_eligible", COORDINATOR, override="4,5 aastat lastekaitses, juhatuse otsus")

    with app.unit() as tx:
        assert state_in(tx, ref) == "interview"
        event = events(tx, ref)[-1]
        assert event.trigger == "mark_eligible"
        assert event.comment == "override: 4,5 aastat lastekaitses, juhatuse otsus"


def test_an_override_by_a_non_coordinator_is_refused(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)

    refusal = refuse(app, ref, "mark_eligible", APPLICANT, override="olen kindlasti sobiv")

    assert refusal.rule == "role"


def test_a_step_that_is_not_overridable_cannot_be_overridden(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)

    refusal = refuse(app, ref, "approve", COORDINATOR, override="komisjon on nõus")

    assert refusal.rule == "override"


def test_mark_ineligible_rejects_with_the_reason_and_tells_the_applicant(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)

    step(app, ref, "mark_ineligible", COORDINATOR, reason="Sotsiaaltöö kraad puudub.")

    with app.unit() as tx:
        assert state_in(tx, ref) == "rejected"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == ("eligibility", "rejected")
        assert event.comment == "Sotsiaaltöö kraad puudub."
        assert outbox(tx, ref, "application_rejected") == [APPLICANT]


def test_mark_ineligible_without_a_reason_is_invalid(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "eligibility", APPLICANT)

    with pytest.raises(InvalidInput) as info:
        step(app, ref, "mark_ineligible", COORDINATOR, reason="  ")

    assert info.value.field == "reason"
    assert state_of(app, ref) == "eligibility"


# -- schedule_interview ----------------------------------------------------------------------


def test_scheduling_the_interview_seats_the_panel_and_starts_reminder_and_decision_timers(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    at = clock.now + timedelta(days=10)

    schedule(app, ref, at)

    with app.unit() as tx:
        application = application_of(tx, ref)
        assert application.interview_at == at
        assert application.interview_place == "Tallinn, Lastekodu 12"
        members = [person_id(tx, email) for email in COMMITTEE]
        assert sorted(v.member_id for v in application.votes) == sorted(members)
        assert all(v.vote is None for v in application.votes)
        assert state_in(tx, ref) == "interview"
        pending = {t.name: t.due_at for t in timers_of(tx, ref) if t.status == "pending"}
        assert pending == {
            "interview_reminder": at - timedelta(days=2),
            "decision_overdue": at + timedelta(days=7),
        }
        assert sorted(outbox(tx, ref, "interview_scheduled")) == sorted([APPLICANT, *COMMITTEE])


@pytest.mark.parametrize(
    "outsider",
    ["nobody@example.ee", COORDINATOR],
    ids=["unknown-email", "coordinator-not-committee"],
)
def test_scheduling_with_someone_outside_the_committee_is_refused(
    app: App, clock: ManualClock, ref: str, outsider: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)

    refusal = refuse(
        app,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=clock.now + timedelta(days=5),
        place="Tallinn",
        committee=[*COMMITTEE[:2], outsider],
    )

    assert refusal.rule == "committee_member"
    assert outsider in refusal.reason


@pytest.mark.parametrize(
    "panel",
    [
        COMMITTEE[:2],
        [*COMMITTEE, "neljas@esta.example"],
        [COMMITTEE[0], COMMITTEE[0], COMMITTEE[1]],
    ],
    ids=["two", "four", "one-member-twice"],
)
def test_scheduling_with_a_panel_not_of_three_is_refused(
    app: App, clock: ManualClock, ref: str, panel: list[str]
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)

    refusal = refuse(
        app,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=clock.now + timedelta(days=5),
        place="Tallinn",
        committee=panel,
    )

    assert refusal.rule == "committee_size"


def test_rescheduling_the_interview_moves_its_timers(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    first = clock.now + timedelta(days=10)
    schedule(app, ref, first)
    clock.advance(days=1)
    second = first + timedelta(days=4)

    schedule(app, ref, second)

    with app.unit() as tx:
        assert application_of(tx, ref).interview_at == second
        rows = {
            (t.name, t.due_at): (t.status, t.finished_at)
            for t in timers_of(tx, ref)
            if t.state == "interview"
        }
        assert rows == {
            ("interview_reminder", first - timedelta(days=2)): ("cancelled", clock.now),
            ("decision_overdue", first + timedelta(days=7)): ("cancelled", clock.now),
            ("interview_reminder", second - timedelta(days=2)): ("pending", None),
            ("decision_overdue", second + timedelta(days=7)): ("pending", None),
        }
        assert len(outbox(tx, ref, "interview_scheduled")) == 8  # the invitation goes again


def test_rescheduling_back_to_the_first_time_restores_its_timers(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    first = clock.now + timedelta(days=10)
    schedule(app, ref, first)
    schedule(app, ref, first + timedelta(days=4))

    schedule(app, ref, first)

    with app.unit() as tx:
        pending = {t.name: t.due_at for t in timers_of(tx, ref) if t.status == "pending"}
        assert pending == {
            "interview_reminder": first - timedelta(days=2),
            "decision_overdue": first + timedelta(days=7),
        }


def test_the_interview_cannot_move_once_a_member_has_voted_for_or_against(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    hold_interview(app, clock, ref, ["approve", None, None])

    refusal = refuse(
        app,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=clock.now + timedelta(days=9),
        place="Tartu",
        committee=COMMITTEE,
    )

    assert refusal.rule == "interview_scheduled"


def test_when_the_whole_panel_recuses_a_new_panel_can_be_seated(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    schedule(app, ref, clock.now + timedelta(days=5))
    for member in COMMITTEE:
        step(app, ref, "record_vote", member, vote="recuse")
    others = [f"asendus{n}@esta.example" for n in range(3)]
    for email in others:
        scenarios.add_staff(app, name=email, email=email, role="committee")

    hold_interview_at = clock.now + timedelta(days=8)
    schedule(app, ref, hold_interview_at, committee=others)
    clock.now = hold_interview_at + timedelta(hours=1)
    for member in others:
        step(app, ref, "record_vote", member, vote="approve")
    step(app, ref, "approve", COORDINATOR)

    assert state_of(app, ref) == "listed"


def test_a_listed_mentor_cannot_start_a_second_application(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "listed", APPLICANT)

    with pytest.raises(Refused) as info:
        submit(app, actor=COORDINATOR, years_in_social_field=20)

    assert info.value.rule == "one_open_application"
    assert "listed" in info.value.reason
    assert state_of(app, ref) == "listed"


# -- record_vote -----------------------------------------------------------------------------


def test_a_panel_member_votes_after_the_interview(app: App, clock: ManualClock, ref: str) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    at = clock.now + timedelta(days=5)
    schedule(app, ref, at)
    clock.now = at + timedelta(hours=1)

    step(app, ref, "record_vote", COMMITTEE[1], vote="approve", notes="Valmis mentoriks.")

    with app.unit() as tx:
        member = person_id(tx, COMMITTEE[1])
        votes = {v.member_id: (v.vote, v.notes, v.voted_at) for v in application_of(tx, ref).votes}
        assert votes[member] == ("approve", "Valmis mentoriks.", clock.now)
        assert [v[0] for k, v in votes.items() if k != member] == [None, None]
        event = events(tx, ref)[-1]
        assert (event.trigger, event.from_state, event.to_state) == (
            "record_vote",
            "interview",
            "interview",
        )
        assert (event.actor_id, event.actor_role) == (member, "committee")
        assert state_in(tx, ref) == "interview"


@pytest.mark.parametrize("voter", ["neljas.liige@esta.example", COORDINATOR, APPLICANT])
def test_only_a_member_of_the_panel_can_vote(
    app: App, clock: ManualClock, ref: str, voter: str
) -> None:
    scenarios.add_staff(
        app, name="Neljas Liige", email="neljas.liige@esta.example", role="committee"
    )
    bring(app, clock, ref, "interview", APPLICANT)
    at = clock.now + timedelta(days=5)
    schedule(app, ref, at)
    clock.now = at + timedelta(hours=1)

    refusal = refuse(app, ref, "record_vote", voter, vote="approve")

    assert refusal.rule == "role"


@pytest.mark.parametrize("vote", ["approve", "decline"])
def test_a_vote_for_or_against_before_the_interview_is_refused(
    app: App, clock: ManualClock, ref: str, vote: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    schedule(app, ref, clock.now + timedelta(days=5))

    refusal = refuse(app, ref, "record_vote", COMMITTEE[0], vote=vote)

    assert refusal.rule == "interview_held"


def test_a_member_may_recuse_before_the_interview(app: App, clock: ManualClock, ref: str) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    schedule(app, ref, clock.now + timedelta(days=5))

    step(app, ref, "record_vote", COMMITTEE[2], vote="recuse", notes="Endine kolleeg.")

    with app.unit() as tx:
        seat = tx.session.scalar(
            select(CommitteeVote).where(CommitteeVote.member_id == person_id(tx, COMMITTEE[2]))
        )
        assert seat is not None
        assert (seat.vote, seat.notes) == ("recuse", "Endine kolleeg.")


# -- approve, decline ------------------------------------------------------------------------


def test_approve_before_the_interview_time_is_refused(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    schedule(app, ref, clock.now + timedelta(days=5))

    refusal = refuse(app, ref, "approve", COORDINATOR)

    assert refusal.rule == "interview_held"


def test_approve_without_a_majority_is_refused(app: App, clock: ManualClock, ref: str) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    hold_interview(app, clock, ref, ["approve", "decline", None])

    refusal = refuse(app, ref, "approve", COORDINATOR)

    assert refusal.rule == "committee_majority_approves"
    assert "1 for, 1 against, 1 not yet voted" in refusal.reason


def test_one_approval_with_two_recusals_lists_the_mentor(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    at = hold_interview(app, clock, ref, ["approve", "recuse", "recuse"])

    step(app, ref, "approve", COMMITTEE[0])

    with app.unit() as tx:
        assert state_in(tx, ref) == "listed"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == ("interview", "listed")
        assert event.actor_role == "committee"
        assert outbox(tx, ref, "listed_welcome") == [APPLICANT]
        pending = {t.name: t.due_at for t in timers_of(tx, ref) if t.status == "pending"}
        assert pending == {"availability_check": clock.now + timedelta(days=365)}
        decision = timers_of(tx, ref, "decision_overdue")
        assert [(t.due_at, t.status) for t in decision] == [(at + timedelta(days=7), "cancelled")]


def test_a_tie_is_no_approval_and_declines(app: App, clock: ManualClock, ref: str) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    hold_interview(app, clock, ref, ["approve", "decline", "recuse"])

    assert refuse(app, ref, "approve", COORDINATOR).rule == "committee_majority_approves"
    step(app, ref, "decline", COORDINATOR, reason="Komisjon jäi eri meelt.")

    assert state_of(app, ref) == "rejected"


def test_a_declining_majority_rejects_with_the_reason(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    hold_interview(app, clock, ref, ["decline", "decline", "approve"])

    step(app, ref, "decline", COMMITTEE[1], reason="Valmisolek mentorluseks puudub.")

    with app.unit() as tx:
        assert state_in(tx, ref) == "rejected"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == ("interview", "rejected")
        assert event.comment == "Valmisolek mentorluseks puudub."
        assert outbox(tx, ref, "application_rejected") == [APPLICANT]
        assert not [t for t in timers_of(tx, ref) if t.status == "pending"]


def test_decline_is_refused_when_the_committee_approves(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    hold_interview(app, clock, ref, ["approve", "approve", "decline"])

    refusal = refuse(app, ref, "decline", COORDINATOR, reason="Ei sobi.")

    assert refusal.rule == "committee_majority_declines"


def test_decline_without_a_reason_is_invalid(app: App, clock: ManualClock, ref: str) -> None:
    bring(app, clock, ref, "interview", APPLICANT)
    hold_interview(app, clock, ref, ["decline", "decline", "decline"])

    with pytest.raises(InvalidInput) as info:
        step(app, ref, "decline", COORDINATOR)

    assert info.value.field == "reason"


# -- pause, resume, retire -------------------------------------------------------------------


@pytest.mark.parametrize("actor", [APPLICANT, COORDINATOR], ids=["mentor", "coordinator"])
def test_a_listed_mentor_is_paused_and_resumed(
    app: App, clock: ManualClock, ref: str, actor: str
) -> None:
    bring(app, clock, ref, "listed", APPLICANT)
    clock.advance(days=3)

    step(app, ref, "pause", actor, reason="Puhkusel")

    with app.unit() as tx:
        assert state_in(tx, ref) == "paused"
        assert events(tx, ref)[-1].comment == "Puhkusel"
        assert [t.status for t in timers_of(tx, ref, "availability_check")] == ["cancelled"]

    clock.advance(days=30)
    step(app, ref, "resume", actor)

    with app.unit() as tx:
        assert state_in(tx, ref) == "listed"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == ("paused", "listed")
        checks = [(t.status, t.due_at) for t in timers_of(tx, ref, "availability_check")]
        assert checks[-1] == ("pending", clock.now + timedelta(days=365))


@pytest.mark.parametrize(
    ("state", "trigger"),
    [("listed", "pause"), ("paused", "resume"), ("listed", "retire")],
)
def test_a_stranger_cannot_pause_resume_or_retire_a_mentor(
    app: App, clock: ManualClock, ref: str, state: str, trigger: str
) -> None:
    add_stranger(app, clock)
    bring(app, clock, ref, state, APPLICANT)

    refusal = refuse(app, ref, trigger, STRANGER)

    assert refusal.rule == "role"


@pytest.mark.parametrize("state", ["listed", "paused"])
def test_a_mentor_retires_from_listed_or_paused(
    app: App, clock: ManualClock, ref: str, state: str
) -> None:
    bring(app, clock, ref, state, APPLICANT)

    step(app, ref, "retire", APPLICANT)

    with app.unit() as tx:
        assert state_in(tx, ref) == "retired"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == (state, "retired")
        assert outbox(tx, ref, "mentor_retired") == [APPLICANT]
        assert not [t for t in timers_of(tx, ref) if t.status == "pending"]


def test_a_retired_mentor_can_take_no_further_step(app: App, clock: ManualClock, ref: str) -> None:
    bring(app, clock, ref, "retired", APPLICANT)

    refusal = refuse(app, ref, "resume", COORDINATOR)

    assert refusal.rule == "state"
    assert "possible: none" in refusal.reason


# -- withdraw --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", OPEN_STATES)
def test_the_applicant_withdraws_from_every_open_state(
    app: App, clock: ManualClock, ref: str, state: str
) -> None:
    bring(app, clock, ref, state, APPLICANT)

    step(app, ref, "withdraw", APPLICANT, reason="Muutsin meelt.")

    with app.unit() as tx:
        assert state_in(tx, ref) == "withdrawn"
        event = events(tx, ref)[-1]
        assert (event.from_state, event.to_state) == (state, "withdrawn")
        assert (event.actor_role, event.comment) == ("applicant", "Muutsin meelt.")
        assert outbox(tx, ref, "application_withdrawn") == [APPLICANT]
        assert not [t for t in timers_of(tx, ref) if t.status == "pending"]


def test_the_system_may_withdraw_a_submitted_application(app: App, ref: str) -> None:
    step(app, ref, "withdraw", None)

    with app.unit() as tx:
        assert state_in(tx, ref) == "withdrawn"
        assert events(tx, ref)[-1].actor_role == "system"


def test_a_listed_mentor_cannot_withdraw_and_is_told_the_possible_steps(
    app: App, clock: ManualClock, ref: str
) -> None:
    bring(app, clock, ref, "listed", APPLICANT)

    refusal = refuse(app, ref, "withdraw", APPLICANT)

    assert refusal.rule == "state"
    assert "possible: pause, retire" in refusal.reason


def test_a_stranger_cannot_withdraw_someone_elses_application(
    app: App, clock: ManualClock, ref: str
) -> None:
    add_stranger(app, clock)

    refusal = refuse(app, ref, "withdraw", STRANGER)

    assert refusal.rule == "role"


# -- qualification rules (lifecycle/qualifications.py, no database) ----------------------------

TODAY = date(2026, 9, 1)


def profile(
    *,
    level: str = "master",
    field: str = "sotsiaaltöö",
    social_work: bool = True,
    years: int = 12,
    credentials: tuple[tuple[str, date | None], ...] = (("supervisor", None),),
) -> MentorProfile:
    return MentorProfile(
        degree_level=level,
        degree_field=field,
        degree_in_social_work=social_work,
        years_in_social_field=years,
        credentials=[
            Credential(kind=kind, issuer="ESCÜ", year=2018, valid_until=until)
            for kind, until in credentials
        ],
    )


@pytest.mark.parametrize(
    ("kwargs", "passed"),
    [
        ({"level": "bachelor"}, True),
        ({"level": "master"}, True),
        ({"level": "doctorate"}, True),
        ({"level": "master", "field": "psühholoogia", "social_work": False}, False),
        ({"level": "bachelor", "field": "majandus", "social_work": False}, False),
        ({"level": "none", "field": "", "social_work": False}, False),
    ],
    ids=["bachelor-sw", "master-sw", "doctorate-sw", "master-other", "bachelor-other", "none"],
)
def test_degree_rule_needs_a_higher_degree_in_social_work(
    kwargs: dict[str, Any], passed: bool
) -> None:
    result = degree_rule(profile(**kwargs))

    assert (result.rule, result.passed, result.required) == ("degree", passed, True)


@pytest.mark.parametrize(("years", "passed"), [(0, False), (4, False), (5, True), (30, True)])
def test_experience_rule_needs_five_years_in_the_social_field(years: int, passed: bool) -> None:
    result = experience_rule(profile(years=years))

    assert (result.rule, result.passed, result.required) == ("experience", passed, True)
    assert f"{years} years" in result.explanation


@pytest.mark.parametrize(
    ("credentials", "passed"),
    [
        ((("mentor", None),), True),
        ((("coach", None),), True),
        ((("supervisor", None),), True),
        ((("coach", TODAY),), True),  # valid through its last day
        ((("coach", TODAY - timedelta(days=1)),), False),
        ((("coach", TODAY - timedelta(days=1)), ("mentor", date(2030, 1, 1))), True),
        ((), False),
    ],
    ids=[
        "mentor",
        "coach",
        "supervisor",
        "valid-today",
        "expired",
        "one-of-two-valid",
        "none",
    ],
)
def test_credential_rule_needs_a_valid_mentor_coach_or_supervisor_certificate(
    credentials: tuple[tuple[str, date | None], ...], passed: bool
) -> None:
    result = credential_rule(profile(credentials=credentials), today=TODAY)

    assert (result.rule, result.passed, result.required) == ("credential", passed, True)


def test_an_expired_certificate_is_explained_as_expired() -> None:
    result = credential_rule(profile(credentials=(("coach", date(2020, 1, 1)),)), today=TODAY)

    assert result.explanation == "the declared certificates have expired"


@pytest.mark.parametrize(
    ("kwargs", "passed"),
    [
        ({"level": "master"}, True),
        ({"level": "doctorate"}, True),
        ({"level": "bachelor"}, False),
        ({"level": "master", "field": "juhtimine", "social_work": False}, False),
    ],
)
def test_master_for_managers_is_informational_and_never_required(
    kwargs: dict[str, Any], passed: bool
) -> None:
    result = manager_rule(profile(**kwargs))

    assert (result.rule, result.passed, result.required) == ("master_for_managers", passed, False)


def test_evaluate_runs_every_rule_in_the_programmes_order() -> None:
    results = evaluate(profile(level="bachelor", years=5), today=TODAY)

    assert [(r.rule, r.passed) for r in results] == [
        ("degree", True),
        ("experience", True),
        ("credential", True),
        ("master_for_managers", False),
    ]
