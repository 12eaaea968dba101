"""The transition path as a whole: one transaction, conflicts, rollback, concurrent writers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, func, select, update
from sqlalchemy.exc import DBAPIError

from lifecycle.bootstrap import App
from lifecycle.cases import services
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import Conflict, NotFound, Refused
from lifecycle.store.models import AuditEvent, Base, Case, OutboxMessage, Person, Timer
from lifecycle.workflows import engine, outbox
from lifecycle.workflows.engine import Tx
from tests.conftest import COORDINATOR, list_mentor

MENTOR = "mentor@example.org"
MENTEE = "mentee@example.org"


def _listed_mentor_and_request(app: App, clock: ManualClock) -> str:
    list_mentor(app, clock, MENTOR, "Kadri Kuusk")
    return scenarios.submit_request(app, scenarios.mentee(MENTEE, "Margus Mänd", MENTOR))


def _snapshot(app: App, ref: str) -> dict[str, Any]:
    """Everything a step may change on a case."""
    with app.unit() as tx:
        case, _ = engine.load_case(tx, ref)
        return {
            "state": case.state,
            "version": case.version,
            "events": tx.session.scalar(
                select(func.count()).select_from(AuditEvent).where(AuditEvent.case_id == case.id)
            ),
            "timers": sorted(
                (t.name, t.status)
                for t in tx.session.scalars(select(Timer).where(Timer.case_id == case.id))
            ),
            "emails": tx.session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.case_id == case.id)
            ),
        }


def test_the_migrations_create_exactly_the_schema_of_the_models(app: App) -> None:
    with app.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_step_writes_state_audit_timers_and_emails_together(app: App, clock: ManualClock) -> None:
    ref = _listed_mentor_and_request(app, clock)
    before = _snapshot(app, ref)
    clock.advance(hours=5)
    scenarios.step(app, ref, "accept", MENTOR)
    after = _snapshot(app, ref)
    assert (before["state"], after["state"]) == ("requested", "first_meeting")
    assert after["version"] == before["version"] + 1
    assert after["events"] == before["events"] + 1
    assert ("remind_mentor", "cancelled") in after["timers"]
    assert ("expire", "cancelled") in after["timers"]
    assert ("meeting_date_missing", "pending") in after["timers"]
    assert after["emails"] == before["emails"] + 2  # request_accepted to both parties
    with app.unit() as tx:
        event = tx.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert event is not None
        assert (event.trigger, event.from_state, event.to_state, event.actor_role) == (
            "accept",
            "requested",
            "first_meeting",
            "mentor",
        )
        assert event.at == clock.now


def test_a_failure_inside_a_step_leaves_the_case_exactly_as_it_was(
    app: App, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _listed_mentor_and_request(app, clock)
    before = _snapshot(app, ref)

    def broken_enqueue(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the outbox table is on fire")

    # The outbox is written last, after the state, the audit event and the timers.
    monkeypatch.setattr(outbox, "enqueue", broken_enqueue)
    with pytest.raises(RuntimeError):
        scenarios.step(app, ref, "accept", MENTOR)
    assert _snapshot(app, ref) == before


def test_a_refused_step_changes_nothing_and_names_the_rule(app: App, clock: ManualClock) -> None:
    ref = _listed_mentor_and_request(app, clock)
    before = _snapshot(app, ref)
    with pytest.raises(Refused) as refused:
        scenarios.step(app, ref, "accept", MENTEE)
    assert refused.value.rule == "role"
    assert "mentor" in refused.value.reason
    assert _snapshot(app, ref) == before


def test_a_step_on_a_stale_version_is_a_conflict_and_changes_nothing(
    app: App, clock: ManualClock
) -> None:
    ref = _listed_mentor_and_request(app, clock)
    seen = _snapshot(app, ref)["version"]
    scenarios.step(app, ref, "accept", MENTOR)  # someone else, first
    after_first = _snapshot(app, ref)
    with pytest.raises(Conflict) as conflict, app.unit() as tx:
        services.advance_case(
            tx, ref=ref, trigger="cancel", actor_email=MENTEE, expected_version=seen
        )
    assert "first_meeting" in str(conflict.value)  # says what the case is now
    assert _snapshot(app, ref) == after_first


def test_two_transactions_racing_on_postgresql_one_wins_the_other_conflicts(
    app: App, clock: ManualClock, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite serialises writers with BEGIN IMMEDIATE; covered by the next test")
    ref = _listed_mentor_and_request(app, clock)
    loser_session = app.sessions()
    loser_session.begin()
    loser = Tx(loser_session, app.settings, app.workflows, clock.now)
    # The loser's transaction has read the case (version n) before the winner commits n+1.
    seen, _ = engine.load_case(loser, ref)
    assert (seen.state, seen.version) == ("requested", 1)
    scenarios.step(app, ref, "accept", MENTOR)  # the winner commits version n+1
    winner_state = _snapshot(app, ref)
    with pytest.raises(Conflict):
        services.advance_case(loser, ref=ref, trigger="cancel", actor_email=MENTEE)
    loser_session.rollback()
    loser_session.close()
    assert _snapshot(app, ref) == winner_state


def test_concurrent_writers_on_sqlite_wait_for_each_other_instead_of_failing(
    app: App, clock: ManualClock, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("the SQLite locking behaviour")
    ref = _listed_mentor_and_request(app, clock)
    scenarios.step(app, ref, "accept", MENTOR)
    errors: list[BaseException] = []
    steps_each = 25

    def writer(actor: str) -> None:
        try:
            for hour in range(steps_each):
                with app.unit() as tx:
                    services.advance_case(
                        tx,
                        ref=ref,
                        trigger="schedule_meeting",
                        actor_email=actor,
                        values={
                            "starts_at": f"2026-12-0{1 + hour % 9}T1{hour % 10}:00",
                            "place": "videokõne",
                        },
                    )
        except BaseException as error:  # collected for the assertion below
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(who,)) for who in (MENTOR, MENTEE)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with app.unit() as tx:
        case, _ = engine.load_case(tx, ref)
        meetings = tx.session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.case_id == case.id, AuditEvent.trigger == "schedule_meeting")
        )
    assert meetings == 2 * steps_each


def test_case_ids_are_readable_and_refer_to_their_workflow(app: App, clock: ManualClock) -> None:
    ref = _listed_mentor_and_request(app, clock)
    assert ref.startswith("M-")
    with app.unit() as tx:
        case = tx.session.scalars(select(Case).where(Case.workflow == "mentor_application")).one()
        assert case.ref == f"A-{case.id}"
        with pytest.raises(NotFound, match="no case"):
            engine.load_case(tx, f"A-{ref.removeprefix('M-')}")


def test_a_reading_transaction_cannot_write(app: App) -> None:
    with pytest.raises(DBAPIError), app.read() as tx:
        tx.session.execute(update(Case).values(state="x"))
    with pytest.raises(DBAPIError), app.read() as tx:
        tx.session.add(Person(name="Uus", email="uus@example.org", role=None, created_at=tx.now))
        tx.session.flush()


def test_a_long_reading_transaction_never_holds_up_a_step(app: App, clock: ManualClock) -> None:
    """A report or page that reads for a while: a step commits meanwhile, and the reader keeps
    its snapshot."""
    ref = scenarios.submit_application(
        app, scenarios.applicant("anne@example.org", "Anne Aas"), actor=COORDINATOR
    )
    reading, stepped = threading.Event(), threading.Event()
    seen: list[str] = []

    def reader() -> None:
        with app.read() as tx:
            seen.append(engine.load_case(tx, ref)[0].state)
            reading.set()
            stepped.wait(timeout=30)
            tx.session.expire_all()
            seen.append(engine.load_case(tx, ref)[0].state)

    thread = threading.Thread(target=reader)
    thread.start()
    assert reading.wait(timeout=30)
    with app.unit() as tx:  # on SQLite a write lock held by the reader would stall this
        services.advance_case(tx, ref=ref, trigger="begin_review", actor_email=COORDINATOR)
    assert thread.is_alive(), "the step waited for the reader to finish"
    stepped.set()
    thread.join(timeout=30)
    assert seen == ["submitted", "submitted"]
    with app.read() as tx:
        assert engine.load_case(tx, ref)[0].state == "eligibility"


def test_every_statement_of_a_mentoring_lifecycle_searches_by_its_case_or_row(
    app: App, clock: ManualClock
) -> None:
    """No step's statement walks a whole table or every pending timer or email.

    Such a statement is fast in a test and grows with every case in production: the cancel
    of a case's timers once searched the index of all pending timers (20,000 relations made
    an accept five times slower).
    """
    if app.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's query plans; PostgreSQL plans by its statistics")
    ref = _listed_mentor_and_request(app, clock)
    issued: dict[str, Any] = {}

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith(("SELECT", "UPDATE", "DELETE")):
            issued.setdefault(statement, parameters)

    event.listen(app.engine, "before_cursor_execute", record)
    try:
        scenarios.bring_relation(app, clock, ref, "closed", mentor=MENTOR, mentee_email=MENTEE)
    finally:
        event.remove(app.engine, "before_cursor_execute", record)
    assert len(issued) > 10
    with app.engine.connect() as connection:
        for statement, parameters in issued.items():
            plan = [
                row[3]
                for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
            walks = [
                step
                for step in plan
                if step.startswith("SCAN")
                or "ix_timers_status_due" in step
                or "ix_outbox_status_next" in step
            ]
            assert not walks, f"{statement}\n→ {plan}"


def test_each_step_writes_its_case_row_once_and_loads_no_more_than_it_needs(
    app: App, clock: ManualClock
) -> None:
    """The transition path's cost is its statements: a flush or a lazy load creeping back
    in shows here as a second UPDATE of the case or a step with more statements."""
    ref = _listed_mentor_and_request(app, clock)
    steps: list[list[str]] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        steps[-1].append(statement.lstrip())

    event.listen(app.engine, "before_cursor_execute", record)
    original = scenarios.step

    def counted(*args: Any, **kwargs: Any) -> None:
        steps.append([])
        original(*args, **kwargs)

    try:
        scenarios.step = counted  # type: ignore[assignment]
        scenarios.bring_relation(app, clock, ref, "closed", mentor=MENTOR, mentee_email=MENTEE)
    finally:
        scenarios.step = original  # type: ignore[assignment]
        event.remove(app.engine, "before_cursor_execute", record)
    assert len(steps) == 8  # accept … close
    for statements in steps:
        assert sum(s.startswith("UPDATE cases") for s in statements) == 1, statements
        assert len(statements) <= 11, statements
