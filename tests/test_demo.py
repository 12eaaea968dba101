"""The demo data: fictional stories told through the real service path, on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

import lifecycle.cli.main as cli
from lifecycle import bootstrap
from lifecycle.config import Settings, load_settings
from lifecycle.demo import story as demo
from lifecycle.errors import Refused
from lifecycle.store import db
from lifecycle.store.models import (
    APPLICATION,
    MENTORING,
    TOPICS,
    Application,
    AuditEvent,
    Case,
    IntakeRound,
    MentorProfile,
    OutboxMessage,
    Person,
    Relation,
)
from lifecycle.workflows.spec import Workflow


def _migrated(path: Path) -> Settings:
    settings = replace(load_settings(environ={}), database_url=f"sqlite:///{path}")
    engine = db.make_engine(settings.database_url)
    db.migrate(engine)
    engine.dispose()
    return settings


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, Any]]:
    settings = _migrated(tmp_path_factory.mktemp("demo") / "demo.db")
    return settings, demo.load(settings)


@pytest.fixture(scope="module")
def engine(loaded: tuple[Settings, dict[str, Any]]) -> Iterator[Engine]:
    built = db.make_engine(loaded[0].database_url)
    yield built
    built.dispose()


@pytest.fixture(scope="module")
def workflows(loaded: tuple[Settings, dict[str, Any]]) -> dict[str, Workflow]:
    app = bootstrap.build(loaded[0])
    app.engine.dispose()
    return app.workflows


def _rows(engine: Engine, query: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.execute(query).all())


@pytest.mark.parametrize("workflow", [APPLICATION, MENTORING])
def test_demo_has_a_case_in_every_state_of_the_workflow(
    engine: Engine, workflows: dict[str, Workflow], workflow: str
) -> None:
    states = {
        state for (state,) in _rows(engine, select(Case.state).where(Case.workflow == workflow))
    }
    assert set(workflows[workflow].states) - states == set()


def test_demo_summary_counts_the_cases_in_the_database(
    engine: Engine, loaded: tuple[Settings, dict[str, Any]]
) -> None:
    rows = _rows(
        engine, select(Case.workflow, Case.state, func.count()).group_by(Case.workflow, Case.state)
    )
    expected: dict[str, dict[str, int]] = {}
    for workflow, state, count in rows:
        expected.setdefault(workflow, {})[state] = count
    summary = loaded[1]
    assert summary["cases"] == expected
    assert summary["people"] == _rows(engine, select(func.count()).select_from(Person))[0][0]
    assert summary["cases"][APPLICATION]["listed"] >= 5
    assert summary["cases"][MENTORING]["active"] >= 2


def test_listed_mentors_together_cover_all_six_topics(engine: Engine) -> None:
    rows = _rows(
        engine,
        select(MentorProfile.topics)
        .join(Application, Application.person_id == MentorProfile.person_id)
        .join(Case, Case.id == Application.case_id)
        .where(Case.state == "listed"),
    )
    covered = {topic for (topics,) in rows for topic in topics}
    assert covered == set(TOPICS)


def test_some_listed_mentors_cannot_mentor_managers(engine: Engine) -> None:
    rows = _rows(
        engine,
        select(MentorProfile.degree_level)
        .join(Application, Application.person_id == MentorProfile.person_id)
        .join(Case, Case.id == Application.case_id)
        .where(Case.state == "listed"),
    )
    levels = {level for (level,) in rows}
    assert "bachelor" in levels
    assert levels & {"master", "doctorate"}


def test_closed_relations_show_the_outcomes_completed_not_continued_and_cancelled(
    engine: Engine,
) -> None:
    rows = _rows(
        engine,
        select(Relation.outcome)
        .join(Case, Case.id == Relation.case_id)
        .where(Case.state == "closed"),
    )
    assert {"completed", "not_continued", "cancelled"} <= {outcome for (outcome,) in rows}


def test_no_audit_event_or_outbox_row_is_later_than_the_real_now(engine: Engine) -> None:
    now = datetime.now(UTC)
    latest_event, earliest_event = _rows(
        engine, select(func.max(AuditEvent.at), func.min(AuditEvent.at))
    )[0]
    latest_email = _rows(
        engine,
        select(func.max(OutboxMessage.created_at), func.max(OutboxMessage.next_attempt_at)),
    )[0]
    assert latest_event <= now
    assert all(moment <= now for moment in latest_email)
    # The timeline looks lived-in: it spans months and ends a few days ago.
    assert now - timedelta(days=7) < latest_event
    assert earliest_event < now - timedelta(days=180)


def test_the_interview_in_progress_is_scheduled_after_the_real_now(engine: Engine) -> None:
    rows = _rows(
        engine,
        select(Application.interview_at)
        .join(Case, Case.id == Application.case_id)
        .where(Case.state == "interview"),
    )
    assert rows
    assert all(at is not None and at > datetime.now(UTC) for (at,) in rows)


def test_applications_by_the_public_form_fall_inside_an_open_intake_round(engine: Engine) -> None:
    rounds = _rows(engine, select(IntakeRound.opens_at, IntakeRound.closes_at))
    submissions = _rows(
        engine,
        select(AuditEvent.at, AuditEvent.actor_role).where(
            AuditEvent.trigger == "submit", AuditEvent.from_state.is_(None)
        ),
    )
    public = [at for at, role in submissions if role == "applicant"]
    assert public
    assert all(any(opens <= at < closes for opens, closes in rounds) for at in public)
    assert {role for _, role in submissions} <= {"applicant", "coordinator"}
    assert any(opens > datetime.now(UTC) for opens, _ in rounds), "the next round is listed"


def test_the_demo_has_an_intake_round_open_today_so_the_application_form_can_be_tried(
    engine: Engine,
) -> None:
    rounds = _rows(engine, select(IntakeRound.opens_at, IntakeRound.closes_at))
    now = datetime.now(UTC)
    assert any(opens <= now < closes for opens, closes in rounds)


def test_demo_people_have_example_addresses_and_some_prefer_english(engine: Engine) -> None:
    people = _rows(engine, select(Person.email, Person.language))
    assert all(email.endswith(("@example.org", "@example.ee")) for email, _ in people)
    assert sum(language == "en" for _, language in people) >= 2


def test_demo_load_refuses_a_database_that_already_holds_cases(
    loaded: tuple[Settings, dict[str, Any]], engine: Engine
) -> None:
    before = _rows(engine, select(func.count()).select_from(AuditEvent))[0][0]
    with pytest.raises(Refused) as refused:
        demo.load(loaded[0])
    assert refused.value.rule == "empty_database"
    assert _rows(engine, select(func.count()).select_from(AuditEvent))[0][0] == before


def test_mentorlus_demo_load_command_fills_a_new_database_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", f"sqlite:///{tmp_path / 'cli.db'}")

    assert cli.main(["demo", "load"]) == 0

    output = capsys.readouterr().out
    assert "people:" in output
    assert "coordinator: triinu.allik@example.ee" in output
