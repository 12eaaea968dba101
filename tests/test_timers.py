"""The scheduler: every reminder and automatic step of SPEC §4 fires on time, once, in its state.

Time moves with the `clock` fixture (a ManualClock) and the worker's job bodies are called
directly (`jobs.fire_due_timers`, `jobs.send_digests`); only the multi-process test runs real
`mentorlus worker --once` processes, on the real clock. Cases are driven through the real
service path (`scenarios`), on a SQLite file and on PostgreSQL (the `app` fixture).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases import queries
from lifecycle.cli.main import main
from lifecycle.config import Settings, load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.schedule import intake, jobs, scheduler, upcoming
from lifecycle.store.models import AuditEvent, Case, IntakeRound, OutboxMessage, Timer
from lifecycle.workflows.engine import load_case
from tests.conftest import COMMITTEE, COORDINATOR, START, bring

TALLINN = ZoneInfo("Europe/Tallinn")
APPLICANT = "kadri.kuusk@example.org"
MENTOR = "mari.mets@example.org"
MENTEE = "jaan.jogi@example.org"
NOTHING = {"fired": 0, "skipped": 0}
ONE = {"fired": 1, "skipped": 0}
LOG_LINE = re.compile(r"timer (\d+) (\w+) on case \d+: (\w+)")


# -- driving cases ---------------------------------------------------------------------------------


def application_in(app: App, clock: ManualClock, state: str, *, email: str = APPLICANT) -> str:
    """An application entered by the coordinator and brought to `state` through real steps."""
    data = scenarios.applicant(email, f"Kandidaat {email}")
    ref = scenarios.submit_application(app, data, actor=COORDINATOR)
    bring(app, clock, ref, state, email)
    return ref


def relation_in(app: App, clock: ManualClock, state: str) -> str:
    """MENTEE's relation with MENTOR (listed through the real steps), brought to `state`."""
    application_in(app, clock, "listed", email=MENTOR)
    ref = scenarios.submit_request(app, scenarios.mentee(MENTEE, "Jaan Jõgi", MENTOR))
    scenarios.bring_relation(app, clock, ref, state, mentor=MENTOR, mentee_email=MENTEE)
    return ref


def schedule_interview(app: App, ref: str, interview_at: datetime) -> None:
    scenarios.step(
        app,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=interview_at,
        place="Tallinn, Lastekodu 12",
        committee=COMMITTEE,
    )


def agree(app: App, clock: ManualClock, ref: str, ends_on: date) -> None:
    """Draft the agreement (or the reframed version) ending on `ends_on`; both sign it."""
    scenarios.step(
        app,
        ref,
        "draft_agreement",
        MENTEE,
        goal="Selge karjääriplaan",
        starts_on=clock.now.astimezone(TALLINN).date(),
        ends_on=ends_on,
        meeting_rhythm="kord kuus",
        fee="tasuta",
        confidentiality=True,
    )
    for party in (MENTOR, MENTEE):
        scenarios.step(app, ref, "sign", party)


# -- reading back ----------------------------------------------------------------------------------


def case_row(app: App, ref: str) -> Case:
    with app.unit() as tx:
        case, _ = load_case(tx, ref)
        return case


def entered(app: App, ref: str) -> datetime:
    return case_row(app, ref).state_entered_at


def timers_of(app: App, ref: str, name: str) -> list[Timer]:
    case_id = case_row(app, ref).id
    with app.unit() as tx:
        return list(
            tx.session.scalars(
                select(Timer)
                .where(Timer.case_id == case_id, Timer.name == name)
                .order_by(Timer.due_at, Timer.id)
            )
        )


def pending_timer(app: App, ref: str, name: str) -> Timer:
    waiting = [t for t in timers_of(app, ref, name) if t.status == "pending"]
    assert len(waiting) == 1, f"expected one pending {name}, found {waiting}"
    return waiting[0]


def only_timer(app: App, ref: str, name: str) -> Timer:
    """The one timer `name` of the case, whatever its status."""
    rows = timers_of(app, ref, name)
    assert len(rows) == 1, rows
    return rows[0]


def timer_row(app: App, timer_id: int) -> Timer:
    with app.unit() as tx:
        found = tx.session.get(Timer, timer_id)
        assert found is not None
        return found


def last_outbox_id(app: App) -> int:
    with app.unit() as tx:
        return tx.session.scalar(select(func.max(OutboxMessage.id))) or 0


def mail_after(app: App, last_id: int) -> list[tuple[str, str]]:
    """(template, to) of every outbox row queued after `last_id`, sorted."""
    with app.unit() as tx:
        rows = tx.session.execute(
            select(OutboxMessage.template, OutboxMessage.to_email).where(OutboxMessage.id > last_id)
        )
        return sorted((template, to) for template, to in rows)


def mail_of(app: App, template: str) -> list[str]:
    with app.unit() as tx:
        return sorted(
            tx.session.scalars(
                select(OutboxMessage.to_email).where(OutboxMessage.template == template)
            )
        )


def outbox_count(app: App) -> int:
    with app.unit() as tx:
        return tx.session.scalar(select(func.count()).select_from(OutboxMessage)) or 0


def overdue_since(app: App, ref: str) -> datetime | None:
    with app.unit() as tx:
        items = {item["id"]: item for item in queries.work_queue(tx, language="en")}
    assert ref in items, f"{ref} is not in the work queue"
    return items[ref]["overdue_since"]


def last_event(app: App, ref: str) -> AuditEvent:
    case_id = case_row(app, ref).id
    with app.unit() as tx:
        event = tx.session.scalar(
            select(AuditEvent)
            .where(AuditEvent.case_id == case_id)
            .order_by(AuditEvent.id.desc())
            .limit(1)
        )
        assert event is not None
        return event


def catch_up(app: App) -> None:
    """Run the timer job until nothing more is due (a repeating timer may re-arm into the past)."""
    for _ in range(20):
        if jobs.fire_due_timers(app) == NOTHING:
            return
    pytest.fail("timers kept coming due")


def fires_at(
    app: App, clock: ManualClock, ref: str, name: str, due: datetime
) -> list[tuple[str, str]]:
    """Check that timer `name` of case `ref` waits until `due` and fires there exactly once.

    The worker runs a second before `due` (anything due earlier fires then): the timer stays
    pending and a further run does nothing. At `due` the run fires this one timer; a second
    run fires nothing and queues no more mail. Returns the mail it queued, (template, to).
    """
    waiting = pending_timer(app, ref, name)
    assert waiting.due_at == due
    assert clock.now <= due - timedelta(seconds=1), "the clock is already past the due time"
    clock.now = due - timedelta(seconds=1)
    catch_up(app)
    assert jobs.fire_due_timers(app) == NOTHING
    assert timer_row(app, waiting.id).status == "pending"
    before = last_outbox_id(app)

    clock.now = due
    assert jobs.fire_due_timers(app) == ONE
    fired = timer_row(app, waiting.id)
    assert (fired.status, fired.finished_at) == ("fired", due)
    queued = mail_after(app, before)
    count = outbox_count(app)
    assert jobs.fire_due_timers(app) == NOTHING
    assert outbox_count(app) == count
    return queued


def both(template: str) -> list[tuple[str, str]]:
    return sorted([(template, MENTOR), (template, MENTEE)])


# -- each reminder and automatic step of SPEC §4 ---------------------------------------------------


def test_an_application_not_reviewed_in_7_days_becomes_overdue_in_the_work_queue(
    app: App, clock: ManualClock
) -> None:
    ref = application_in(app, clock, "submitted")
    due = entered(app, ref) + timedelta(days=7)
    assert overdue_since(app, ref) is None

    assert fires_at(app, clock, ref, "review_overdue", due) == []

    assert overdue_since(app, ref) == due


def test_an_unanswered_info_request_reminds_the_applicant_after_7_days_and_withdraws_after_30(
    app: App, clock: ManualClock
) -> None:
    ref = application_in(app, clock, "awaiting_info")
    since = entered(app, ref)

    reminder = fires_at(app, clock, ref, "info_reminder", since + timedelta(days=7))
    assert reminder == [("info_reminder", APPLICANT)]
    assert case_row(app, ref).state == "awaiting_info"

    withdrawal = fires_at(app, clock, ref, "withdraw", since + timedelta(days=30))
    assert withdrawal == [("application_withdrawn", APPLICANT)]
    assert case_row(app, ref).state == "withdrawn"
    event = last_event(app, ref)
    assert (event.trigger, event.from_state, event.to_state) == (
        "withdraw",
        "awaiting_info",
        "withdrawn",
    )
    assert (event.actor_id, event.actor_role, event.at) == (None, "system", clock.now)


def test_interview_reminder_goes_to_all_2_days_before_and_no_decision_is_overdue_7_days_after(
    app: App, clock: ManualClock
) -> None:
    ref = application_in(app, clock, "interview")
    interview_at = clock.now + timedelta(days=5, hours=3)
    schedule_interview(app, ref, interview_at)

    reminder = fires_at(app, clock, ref, "interview_reminder", interview_at - timedelta(days=2))
    assert reminder == sorted(("interview_reminder", email) for email in [APPLICANT, *COMMITTEE])
    assert overdue_since(app, ref) is None

    due = interview_at + timedelta(days=7)
    assert fires_at(app, clock, ref, "decision_overdue", due) == []
    assert overdue_since(app, ref) == due
    assert case_row(app, ref).state == "interview"


def test_a_listed_mentor_is_asked_every_365_days_whether_still_available(
    app: App, clock: ManualClock
) -> None:
    ref = application_in(app, clock, "listed")
    since = entered(app, ref)

    first = fires_at(app, clock, ref, "availability_check", since + timedelta(days=365))
    assert first == [("availability_check", APPLICANT)]
    # Re-armed in the same state entry for another 365 days, and fires again then.
    second = fires_at(app, clock, ref, "availability_check", since + timedelta(days=730))
    assert second == [("availability_check", APPLICANT)]
    assert [t.status for t in timers_of(app, ref, "availability_check")] == [
        "fired",
        "fired",
        "pending",
    ]
    assert case_row(app, ref).state == "listed"


def test_an_unanswered_request_reminds_the_mentor_after_3_days_and_expires_after_10(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "requested")
    since = entered(app, ref)

    reminder = fires_at(app, clock, ref, "remind_mentor", since + timedelta(days=3))
    assert reminder == [("request_reminder", MENTOR)]
    assert case_row(app, ref).state == "requested"

    expiry = fires_at(app, clock, ref, "expire", since + timedelta(days=10))
    assert expiry == sorted([("request_expired", MENTEE), ("request_expired", COORDINATOR)])
    assert case_row(app, ref).state == "expired"
    event = last_event(app, ref)
    assert (event.trigger, event.from_state, event.to_state) == ("expire", "requested", "expired")
    assert (event.actor_id, event.actor_role) == (None, "system")


def test_no_first_meeting_date_14_days_after_acceptance_reminds_both(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "first_meeting")

    due = entered(app, ref) + timedelta(days=14)
    assert fires_at(app, clock, ref, "meeting_date_missing", due) == both("meeting_date_reminder")
    assert case_row(app, ref).state == "first_meeting"


def test_a_first_meeting_date_cancels_its_reminder_and_2_hours_after_it_both_are_asked_to_go_on(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "first_meeting")
    since = entered(app, ref)
    meeting_at = since + timedelta(days=20)
    clock.advance(days=2)
    scenarios.step(app, ref, "schedule_meeting", MENTOR, starts_at=meeting_at, place="videokõne")
    assert [t.status for t in timers_of(app, ref, "meeting_date_missing")] == ["cancelled"]

    clock.now = since + timedelta(days=15)  # past the date reminder's time
    assert jobs.fire_due_timers(app) == NOTHING
    assert mail_of(app, "meeting_date_reminder") == []

    go_on = fires_at(app, clock, ref, "go_on_question", meeting_at + timedelta(hours=2))
    assert go_on == both("go_on_question")


@pytest.mark.parametrize("state", ["agreement", "reframed"])
def test_an_unsigned_agreement_reminds_both_after_14_days(
    app: App, clock: ManualClock, state: str
) -> None:
    ref = relation_in(app, clock, state)

    due = entered(app, ref) + timedelta(days=14)
    assert fires_at(app, clock, ref, "agreement_unsigned", due) == both("agreement_reminder")
    assert case_row(app, ref).state == state


def test_active_parties_hear_of_the_end_14_days_before_at_9_local_and_check_in_every_30_days(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "agreement")
    ends_on = clock.now.astimezone(TALLINN).date() + timedelta(days=20)
    agree(app, clock, ref, ends_on)
    since = entered(app, ref)
    assert case_row(app, ref).state == "active"

    ending_at = datetime.combine(ends_on - timedelta(days=14), time(9), tzinfo=TALLINN)
    assert fires_at(app, clock, ref, "agreement_ending", ending_at) == both("agreement_ending")

    first = fires_at(app, clock, ref, "check_in", since + timedelta(days=30))
    assert first == both("monthly_check_in")
    second = fires_at(app, clock, ref, "check_in", since + timedelta(days=60))
    assert second == both("monthly_check_in")
    assert case_row(app, ref).state == "active"


# -- cancelled on leaving the state ----------------------------------------------------------------


def test_accepting_a_request_cancels_the_mentor_reminder_and_the_expiry(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "requested")
    since = entered(app, ref)
    clock.advance(days=1)
    scenarios.step(app, ref, "accept", MENTOR)
    assert [t.status for t in timers_of(app, ref, "remind_mentor")] == ["cancelled"]
    assert [t.status for t in timers_of(app, ref, "expire")] == ["cancelled"]

    clock.now = since + timedelta(days=10, minutes=1)  # past both; the date reminder is not due
    assert jobs.fire_due_timers(app) == NOTHING
    assert case_row(app, ref).state == "first_meeting"
    assert mail_of(app, "request_reminder") == []
    assert mail_of(app, "request_expired") == []


def test_answering_an_info_request_cancels_its_timers_and_a_stray_old_timer_is_skipped(
    app: App, clock: ManualClock
) -> None:
    ref = application_in(app, clock, "awaiting_info")
    old_entry = case_row(app, ref).entry_event_id
    clock.advance(days=2)
    scenarios.step(app, ref, "provide_info", APPLICANT, message="Diplomi koopia on lisatud.")
    assert [t.status for t in timers_of(app, ref, "info_reminder")] == ["cancelled"]
    assert [t.status for t in timers_of(app, ref, "withdraw")] == ["cancelled"]

    clock.advance(days=31)
    assert jobs.fire_due_timers(app) == NOTHING
    assert case_row(app, ref).state == "eligibility"
    assert mail_of(app, "info_reminder") == []

    # A pending row of the earlier state entry (as if left behind) is skipped, never fired.
    case = case_row(app, ref)
    with app.unit() as tx:
        stray = Timer(
            case_id=case.id,
            entry_event_id=old_entry,
            state="awaiting_info",
            name="withdraw",
            due_at=clock.now - timedelta(minutes=1),
            status="pending",
            note="",
        )
        tx.session.add(stray)
        tx.session.flush()
        stray_id = stray.id
    count = outbox_count(app)
    assert jobs.fire_due_timers(app) == {"fired": 0, "skipped": 1}
    row = timer_row(app, stray_id)
    assert row.status == "skipped" and row.note
    assert case_row(app, ref).state == "eligibility"
    assert outbox_count(app) == count


# -- downtime, restart and catch-up ----------------------------------------------------------------


def test_a_worker_down_for_40_days_fires_what_came_due_in_due_order_once_even_after_a_restart(
    app: App, clock: ManualClock, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    ref = relation_in(app, clock, "requested")
    before = last_outbox_id(app)
    clock.advance(days=40)  # nothing ran meanwhile

    caplog.set_level(logging.INFO, logger="lifecycle.schedule.jobs")
    assert jobs.fire_due_timers(app) == {"fired": 2, "skipped": 0}

    fired = [m.groups()[1:] for r in caplog.records if (m := LOG_LINE.search(r.getMessage()))]
    assert fired == [("remind_mentor", "fired"), ("expire", "fired")]
    assert case_row(app, ref).state == "expired"
    with app.unit() as tx:
        rows = tx.session.execute(
            select(OutboxMessage.template, OutboxMessage.to_email)
            .where(OutboxMessage.id > before)
            .order_by(OutboxMessage.id)
        ).all()
    queued = [tuple(row) for row in rows]
    assert queued[0] == ("request_reminder", MENTOR)
    assert sorted(queued[1:]) == sorted(
        [("request_expired", MENTEE), ("request_expired", COORDINATOR)]
    )
    assert mail_of(app, "request_reminder") == [MENTOR]

    # The worker restarts (a new app on the same database) and runs again: nothing more.
    count = outbox_count(app)
    restarted = bootstrap.build(settings, clock=clock)
    try:
        assert jobs.fire_due_timers(restarted) == NOTHING
        assert scheduler.run_due_now(restarted)["timers"] == NOTHING
    finally:
        restarted.engine.dispose()
    assert outbox_count(app) == count
    assert [t.status for t in timers_of(app, ref, "remind_mentor")] == ["fired"]
    assert [t.status for t in timers_of(app, ref, "expire")] == ["fired"]


def test_a_late_interview_reminder_still_goes_before_the_interview_and_is_skipped_after_it(
    app: App, clock: ManualClock
) -> None:
    early = application_in(app, clock, "interview", email="enne@example.org")
    late = application_in(app, clock, "interview", email="parast@example.org")
    early_at = clock.now + timedelta(days=5)
    late_at = clock.now + timedelta(days=4)
    schedule_interview(app, early, early_at)
    schedule_interview(app, late, late_at)

    # The worker was down from before both reminders until after the later-set interview.
    clock.now = late_at + timedelta(hours=1)
    before = last_outbox_id(app)
    assert jobs.fire_due_timers(app) == {"fired": 1, "skipped": 1}

    sent = only_timer(app, early, "interview_reminder")
    assert sent.status == "fired"
    skipped = only_timer(app, late, "interview_reminder")
    assert skipped.status == "skipped"
    assert "late" in skipped.note
    assert mail_after(app, before) == sorted(
        ("interview_reminder", email) for email in ["enne@example.org", *COMMITTEE]
    )
    assert [t.status for t in timers_of(app, late, "decision_overdue")] == ["pending"]
    assert jobs.fire_due_timers(app) == NOTHING


def test_a_monthly_check_in_missed_for_100_days_is_sent_once_and_re_armed_into_the_future(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "active")
    clock.advance(days=100)

    scheduler.run_due_now(app)  # one `worker --once`

    assert mail_of(app, "monthly_check_in") == sorted([MENTOR, MENTEE])
    assert pending_timer(app, ref, "check_in").due_at > clock.now


# -- time zones and DST ----------------------------------------------------------------------------


def test_the_agreement_end_reminder_is_due_at_9_local_on_both_sides_of_the_dst_changes(
    app: App, clock: ManualClock
) -> None:
    ref = relation_in(app, clock, "agreement")
    # ends_on → UTC hour of 09:00 local 14 days before (EEST is UTC+3, EET is UTC+2).
    cases = [
        (date(2027, 3, 29), 7),  # ends right after the March change; reminder still in EET
        (date(2027, 4, 11), 6),  # reminder on the March DST Sunday itself, in EEST
        (date(2026, 10, 26), 6),  # ends right after the October change; reminder in EEST
        (date(2026, 11, 8), 7),  # reminder on the October DST Sunday itself, in EET
    ]
    for index, (ends_on, utc_hour) in enumerate(cases):
        if index:
            scenarios.step(app, ref, "reframe", MENTEE, question=f"Uus küsimus {index}")
        agree(app, clock, ref, ends_on)
        assert case_row(app, ref).state == "active"
        due = pending_timer(app, ref, "agreement_ending").due_at
        local = due.astimezone(TALLINN)
        assert (local.date(), local.time()) == (ends_on - timedelta(days=14), time(9))
        assert due.astimezone(UTC).hour == utc_hour

    # The last one fires at 09:00 local on 25 October 2026, after the clocks went back.
    due = datetime(2026, 10, 25, 7, 0, tzinfo=UTC)
    assert fires_at(app, clock, ref, "agreement_ending", due) == both("agreement_ending")


def test_the_daily_digest_runs_at_its_local_hour_on_both_dst_sundays_and_no_late_job_is_skipped(
    tmp_path: Path,
) -> None:
    settings = replace(load_settings(environ={}), database_url=f"sqlite:///{tmp_path}/none.db")
    app = bootstrap.build(settings, clock=ManualClock(START))
    assert not 3 <= settings.digest_hour < 4
    trigger = scheduler.build(app).get_job("digests").trigger

    for evening, day, offset in [
        (datetime(2027, 3, 27, 20, 0, tzinfo=TALLINN), date(2027, 3, 28), timedelta(hours=3)),
        (datetime(2026, 10, 24, 20, 0, tzinfo=TALLINN), date(2026, 10, 25), timedelta(hours=2)),
    ]:
        at = trigger.get_next_fire_time(None, evening).astimezone(TALLINN)
        assert (at.date(), at.hour, at.minute) == (day, settings.digest_hour, 0)
        assert at.utcoffset() == offset
        following = trigger.get_next_fire_time(at, at + timedelta(seconds=1)).astimezone(TALLINN)
        assert (following.date(), following.hour) == (day + timedelta(days=1), settings.digest_hour)

    async def started() -> dict[str, tuple[Any, ...]]:
        built = scheduler.build(app)
        built.start(paused=True)
        try:
            return {
                job.id: (job.misfire_grace_time, job.coalesce, job.max_instances)
                for job in built.get_jobs()
            }
        finally:
            built.shutdown(wait=False)

    assert asyncio.run(started()) == {
        "timers": (None, True, 1),
        "rounds": (None, True, 1),
        "digests": (None, True, 1),
        "retention": (None, True, 1),
    }
    app.engine.dispose()


# -- the coordinators' digest ----------------------------------------------------------------------


def digests(app: App) -> int:
    with app.unit() as tx:
        return jobs.send_digests(tx)


def test_no_digest_is_sent_when_nothing_waits_for_a_coordinator(
    app: App, clock: ManualClock
) -> None:
    assert digests(app) == 0
    application_in(app, clock, "awaiting_info")  # waits for the applicant, not a coordinator
    clock.advance(days=1)
    assert digests(app) == 0
    assert mail_of(app, "digest") == []


def test_each_coordinator_gets_one_digest_a_local_day_and_none_before_the_digest_hour(
    app: App, clock: ManualClock
) -> None:
    second = "rein.raud@esta.example"
    scenarios.add_staff(app, name="Rein Raud", email=second, role="coordinator")
    ref = application_in(app, clock, "submitted")
    hour = app.settings.digest_hour
    assert clock.now.astimezone(TALLINN).hour >= hour  # START is 10:00 local

    assert digests(app) == 2
    assert digests(app) == 0
    assert mail_of(app, "digest") == sorted([COORDINATOR, second])
    with app.unit() as tx:
        refs = tx.session.scalars(
            select(OutboxMessage.refs).where(OutboxMessage.template == "digest")
        ).all()
    assert all([item["id"] for item in r["queue"]] == [ref] for r in refs)

    tomorrow = clock.now.astimezone(TALLINN).date() + timedelta(days=1)
    clock.now = datetime.combine(tomorrow, time(hour), tzinfo=TALLINN) - timedelta(minutes=1)
    assert digests(app) == 0
    clock.advance(minutes=1)
    assert digests(app) == 2
    clock.advance(hours=10)
    assert digests(app) == 0
    assert len(mail_of(app, "digest")) == 4


# -- several workers -------------------------------------------------------------------------------


def due_rows(app: App, ref: str, name: str, count: int, latest: datetime) -> list[int]:
    """`count` pending rows of timer `name` for the case's current state entry, all due."""
    case = case_row(app, ref)
    assert case.entry_event_id is not None
    rows = [
        Timer(
            case_id=case.id,
            entry_event_id=case.entry_event_id,
            state=case.state,
            name=name,
            due_at=latest - timedelta(seconds=index),
            status="pending",
            note="",
        )
        for index in range(count)
    ]
    with app.unit() as tx:
        tx.session.add_all(rows)
        tx.session.flush()
        return [row.id for row in rows]


def settled(app: App, ids: list[int]) -> dict[str, int]:
    with app.unit() as tx:
        rows = tx.session.execute(
            select(Timer.status, func.count()).where(Timer.id.in_(ids)).group_by(Timer.status)
        )
        return {status: count for status, count in rows}


def timer_mail(app: App, ids: list[int]) -> list[str]:
    with app.unit() as tx:
        keys = tx.session.scalars(
            select(OutboxMessage.idempotency_key).where(
                OutboxMessage.idempotency_key.like("timer:%")
            )
        ).all()
    wanted = {str(i) for i in ids}
    return [key for key in keys if key.split(":")[1] in wanted]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_two_worker_processes_on_postgresql_fire_each_of_1000_due_timers_exactly_once(
    app: App, clock: ManualClock, backend: str, database_url: str
) -> None:
    if backend != "postgres":
        pytest.skip("several worker processes are a PostgreSQL deployment")
    # The workers run on the real clock: the cases' own timers lie in the future.
    clock.now = datetime.now(UTC) - timedelta(days=3)
    quiet = application_in(app, clock, "submitted", email="ootel@example.org")
    asking = application_in(app, clock, "awaiting_info")
    # Today's rounds and digest are done already, so the workers contend only for timers
    # (their race on the digest and the rounds has its own test below).
    clock.now = datetime.now(UTC)
    scheduler.round_mail(app)
    scheduler.digests(app)
    latest = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    overdue = due_rows(app, quiet, "review_overdue", 900, latest)
    reminders = due_rows(app, asking, "info_reminder", 100, latest)

    env = {
        **os.environ,
        "MENTORLUS_DATABASE__URL": database_url,
        "MENTORLUS_SMTP__PORT": str(closed_port()),  # delivery fails and retries later
    }
    command = [str(Path(sys.executable).parent / "mentorlus"), "--json", "worker", "--once"]
    workers = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outputs]

    fired: dict[int, int] = {}
    for _, err in outputs:
        for match in LOG_LINE.finditer(err):
            if match.group(3) == "fired":
                timer_id = int(match.group(1))
                fired[timer_id] = fired.get(timer_id, 0) + 1
    every = overdue + reminders
    assert {timer_id: fired.get(timer_id, 0) for timer_id in every} == dict.fromkeys(every, 1)
    assert sum(json.loads(out)["timers"]["fired"] for out, _ in outputs) == len(every)
    assert settled(app, every) == {"fired": 1000}
    keys = timer_mail(app, reminders)
    assert sorted(keys) == sorted(f"timer:{i}:{keys[0].split(':')[2]}" for i in reminders)
    assert case_row(app, asking).state == "awaiting_info"


@pytest.mark.parametrize(
    ("job", "gate"),
    [
        ("digests", (queries, "work_queue")),
        ("round_mail", (intake, "schedule_dates")),
    ],
)
def test_two_workers_running_the_same_daily_job_at_the_same_moment_do_it_once_without_an_error(
    app: App,
    clock: ManualClock,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    job: str,
    gate: tuple[Any, str],
) -> None:
    """Every worker's cron fires the digest at the same second: both read "not sent yet"."""
    if backend != "postgres":
        pytest.skip("SQLite's BEGIN IMMEDIATE runs the two jobs one after the other")
    application_in(app, clock, "submitted")
    together = threading.Barrier(2, timeout=10)
    module, name = gate
    real = getattr(module, name)

    def in_step(*args: Any, **kwargs: Any) -> Any:
        together.wait()  # both have checked what is done; now both go on
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, in_step)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            getattr(scheduler, job)(app)
        except BaseException as error:  # a thread's error must reach the test
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    monkeypatch.undo()

    assert [type(error).__name__ for error in errors] == []
    with app.unit() as tx:
        keys = tx.session.scalars(select(OutboxMessage.idempotency_key)).all()
        rounds = tx.session.scalars(select(IntakeRound.scheduled_for)).all()
    assert len(keys) == len(set(keys))
    assert len(rounds) == len(set(rounds))
    if job == "digests":
        assert mail_of(app, "digest") == [COORDINATOR]
    else:
        assert len(rounds) >= 2


def test_two_threads_firing_due_timers_at_once_fire_each_once_without_a_locking_error(
    app: App, clock: ManualClock
) -> None:
    quiet = application_in(app, clock, "submitted", email="ootel@example.org")
    asking = application_in(app, clock, "awaiting_info")
    latest = clock.now - timedelta(minutes=1)
    every = due_rows(app, quiet, "review_overdue", 200, latest) + due_rows(
        app, asking, "info_reminder", 100, latest
    )
    start = threading.Barrier(2)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            start.wait(timeout=10)
            results.append(jobs.fire_due_timers(app))
        except BaseException as error:  # a thread's error must reach the test
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    assert sum(r["fired"] for r in results) == len(every)
    assert sum(r["skipped"] for r in results) == 0
    assert settled(app, every) == {"fired": 300}
    assert len(timer_mail(app, every)) == 100
    assert jobs.fire_due_timers(app) == NOTHING


# -- the command line ------------------------------------------------------------------------------


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite file made by `mentorlus init`; mail delivery points at a closed port."""
    url = f"sqlite:///{tmp_path}/worker.db"
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", url)
    monkeypatch.setenv("MENTORLUS_SMTP__PORT", str(closed_port()))
    assert main(["init"]) == 0
    return url


def cli_app(clock: ManualClock) -> App:
    built = bootstrap.build(load_settings(), clock=clock)
    scenarios.add_staff(built, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    for email in COMMITTEE:
        scenarios.add_staff(built, name=email, email=email, role="committee")
    return built


def test_worker_once_fires_the_due_timers_and_exits_0(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=10))
    built = cli_app(clock)
    try:
        quiet = application_in(built, clock, "submitted", email="ootel@example.org")
        asking = application_in(built, clock, "awaiting_info")
        capsys.readouterr()

        assert main(["--json", "worker", "--once"]) == 0
        done = json.loads(capsys.readouterr().out)
        assert done["timers"] == {"fired": 2, "skipped": 0}
        assert only_timer(built, quiet, "review_overdue").status == "fired"
        assert [t.status for t in timers_of(built, asking, "info_reminder")] == ["fired"]
        assert [t.status for t in timers_of(built, asking, "withdraw")] == ["pending"]
        assert mail_of(built, "info_reminder") == [APPLICANT]

        assert main(["--json", "worker", "--once"]) == 0
        assert json.loads(capsys.readouterr().out)["timers"] == NOTHING
        assert mail_of(built, "info_reminder") == [APPLICANT]
    finally:
        built.engine.dispose()


def test_upcoming_lists_the_pending_timers_and_round_mail_in_time_order_with_what_each_does(
    app: App, clock: ManualClock
) -> None:
    ref = application_in(app, clock, "submitted")  # at START: 1 September 2026, 10:00 local

    with app.unit() as tx:
        items = upcoming.until(tx, datetime(2026, 10, 15, 23, 59, tzinfo=TALLINN))

    assert [(i["at"], i["case"], i["does"]) for i in items] == [
        ("2026-09-01T10:00+03:00", None, "email round_opened to subscribers"),
        ("2026-09-08T10:00+03:00", ref, "case becomes overdue for coordinators"),
        ("2026-09-24T09:00+03:00", None, "email round_closing to subscribers"),
        ("2026-10-01T09:00+03:00", None, "email round_summary to coordinators"),
    ]


def test_the_upcoming_command_previews_reminders_and_automatic_steps_until_a_date(
    cli_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=1))
    built = cli_app(clock)
    try:
        ref = relation_in(built, clock, "requested")
        asking = application_in(built, clock, "awaiting_info")
        requested_at = entered(built, ref)
        asked_at = entered(built, asking)
    finally:
        built.engine.dispose()
    end = (asked_at + timedelta(days=40)).astimezone(TALLINN).date()
    capsys.readouterr()

    assert main(["--json", "upcoming", "--until", end.isoformat()]) == 0
    items = json.loads(capsys.readouterr().out)

    moments = [datetime.fromisoformat(item["at"]) for item in items]
    assert moments == sorted(moments)
    timers = [(item["case"], item["timer"], item["does"]) for item in items if item["case"]]
    expected = sorted(
        [
            (requested_at + timedelta(days=3), ref, "remind_mentor", "email request_reminder"),
            (requested_at + timedelta(days=10), ref, "expire", "step expire"),
            (asked_at + timedelta(days=7), asking, "info_reminder", "email info_reminder"),
            (asked_at + timedelta(days=30), asking, "withdraw", "step withdraw"),
        ]
    )
    assert [(c, t) for c, t, _ in timers] == [(c, t) for _, c, t, _ in expected]
    assert all(
        does.startswith(start) for (_, _, does), (*_, start) in zip(timers, expected, strict=True)
    )
