"""The reliability suite's fast part: the service as real processes under load and faults.

One PostgreSQL run (two web processes, two workers, ~50 s of load with one round of faults:
SMTP server killed, a worker SIGKILLed while sending, the database restarted, the other
worker SIGKILLed) and, alongside it, the SQLite faults (the file locked by another process,
the disk full). Both are described in tests/reliability/; `make soak` runs the long form.
docs/reliability.md says what is promised and what was measured.

The tests at the end state what the faults first showed wrong, now fixed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from lifecycle.bootstrap import App
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import MentorlusError
from lifecycle.schedule import jobs
from lifecycle.store.models import Timer
from lifecycle.workflows.engine import load_case
from tests.conftest import list_mentor
from tests.reliability.scenario import Run, Unavailable, run_postgres
from tests.reliability.sqlite_faults import run_sqlite

pytestmark = pytest.mark.reliability

LOAD_SECONDS = 48  # one round of the fault cycle, and a second SMTP outage


def unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the reliability suite must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Run | Unavailable]]:
    """Both runs at once: the SQLite one mostly waits for its lock to run out."""
    results: dict[str, Run | Unavailable] = {}
    errors: list[BaseException] = []

    def sqlite_part(directory: Path) -> None:
        try:
            results["sqlite"] = run_sqlite(directory)
        except Unavailable as reason:
            results["sqlite"] = reason
        except BaseException as error:  # raised again in the test's own thread
            errors.append(error)

    side = threading.Thread(target=sqlite_part, args=(tmp_path_factory.mktemp("sqlite"),))
    side.start()
    try:
        results["postgres"] = run_postgres(
            tmp_path_factory.mktemp("postgres"), seconds=LOAD_SECONDS
        )
    except Unavailable as reason:
        results["postgres"] = reason
    finally:
        side.join()
    if errors:
        raise errors[0]
    # The load held and the faults survived, shown whatever the capture settings.
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        for result in results.values():
            if isinstance(result, Run):
                print(f"\n{result.summary()}")
    yield results


def run_of(runs: dict[str, Run | Unavailable], name: str) -> Run:
    result = runs[name]
    if isinstance(result, Unavailable):
        unavailable(str(result))
    assert isinstance(result, Run)
    return result


@pytest.fixture
def postgres(runs: dict[str, Run | Unavailable]) -> Run:
    return run_of(runs, "postgres")


@pytest.fixture
def sqlite(runs: dict[str, Run | Unavailable]) -> Run:
    return run_of(runs, "sqlite")


# -- what holds --------------------------------------------------------------------------------


def test_under_load_and_faults_every_state_replays_its_trail_and_no_email_is_lost_or_doubled(
    postgres: Run,
) -> None:
    assert postgres.problems == [], postgres.summary()
    # The run did what it says: load on both kinds of actor, every fault, mail and timers.
    kinds = {kind for kind, _ in postgres.stats.outcomes}
    assert {"request", "act", "console step", "api step", "application"} <= kinds
    assert postgres.stats.calls > 300
    names = " ".join(fault.name for fault in postgres.faults)
    for fault in ("SMTP server killed", "worker-1 SIGKILL", "worker-2 SIGKILL", "database"):
        assert fault in names
    assert postgres.figures["mail"].split()[0] != "0"
    fired = postgres.figures["timers"]
    assert "remind_mentor" in fired and "expire" in fired, fired


def test_a_locked_or_full_sqlite_database_refuses_callers_without_half_made_data(
    sqlite: Run,
) -> None:
    assert sqlite.problems == [], sqlite.summary()
    # The faults bit: within the busy timeout callers waited; past it and on the full disk
    # they were refused — and the checks above found nothing half-made afterwards.
    waited = sqlite.findings["locked 5 s: web request"]
    assert waited["code"] == 202 and waited["seconds"] >= 3
    for fault in ("locked past the busy timeout", "disk full"):
        assert sqlite.findings[f"{fault}: web request"]["code"] >= 500
        assert sqlite.findings[f"{fault}: CLI request"]["code"] == 1


# -- what the faults first showed wrong (fixed) -------------------------------------------------


def test_a_worker_outlives_a_database_restart(postgres: Run) -> None:
    assert [exit_.service for exit_ in postgres.exits] == []


def test_a_worker_outlives_a_locked_or_full_sqlite_database(sqlite: Run) -> None:
    assert [exit_.service for exit_ in sqlite.exits] == []


def test_the_cli_says_in_one_line_that_the_database_is_locked_or_full(sqlite: Run) -> None:
    for key in ("locked past the busy timeout: CLI request", "disk full: CLI request"):
        answer = sqlite.findings[key]
        assert answer["code"] == 1
        assert answer["lines"] == 1, answer


def test_the_web_answers_a_locked_or_full_database_with_503_and_the_reason(
    sqlite: Run,
) -> None:
    for key in ("locked past the busy timeout: web request", "disk full: web request"):
        answer = sqlite.findings[key]
        assert answer["code"] == 503, answer
        assert "locked" in answer["text"] or "full" in answer["text"], answer


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite runs one writer at a time
def test_a_mentor_answering_as_the_request_expires_wins_or_gets_a_conflict_never_a_deadlock(
    app: App, clock: ManualClock
) -> None:
    """Seen in the soak: a mentor's accept got 500 (DeadlockDetected) outside any fault.

    The two transactions are made to meet in the order the soak caught them: the worker has
    locked the expire timer when the mentor's step updates the case.
    """
    mentor, mentee = "mari.mets@example.org", "jaan.jogi@example.org"
    list_mentor(app, clock, mentor, "Mari Mets")
    ref = scenarios.submit_request(app, scenarios.mentee(mentee, "Jaan Jõgi", mentor))
    clock.advance(days=11)  # the request is past its expiry: the timer is due
    with app.unit() as tx:
        case, _ = load_case(tx, ref)
        expire = tx.session.scalar(
            select(Timer.id).where(Timer.case_id == case.id, Timer.name == "expire")
        )
    assert expire is not None
    who = threading.local()
    timer_locked, mentor_has_case = threading.Event(), threading.Event()

    @event.listens_for(app.engine, "before_cursor_execute")
    def meet(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        role = getattr(who, "role", None)
        if statement.startswith("UPDATE cases"):
            # The worker waits until the mentor has the case; the mentor until the worker
            # has the timer. A timeout lets a fixed lock order pass without hanging.
            (mentor_has_case if role == "worker" else timer_locked).wait(5)

    @event.listens_for(app.engine, "after_cursor_execute")
    def mark(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        role = getattr(who, "role", None)
        if role == "worker" and "FROM timers" in statement and "FOR UPDATE" in statement:
            timer_locked.set()
        if role == "mentor" and statement.startswith("UPDATE cases"):
            mentor_has_case.set()

    errors: list[Exception] = []

    def act(role: str, step: Any) -> None:
        who.role = role
        try:
            step()
        except (MentorlusError, OperationalError) as error:
            errors.append(error)

    worker = threading.Thread(target=act, args=("worker", lambda: jobs.fire_timer(app, expire)))
    answer = threading.Thread(
        target=act, args=("mentor", lambda: scenarios.step(app, ref, "accept", mentor))
    )
    worker.start()
    timer_locked.wait(5)
    answer.start()
    worker.join(timeout=30)
    answer.join(timeout=30)
    assert [error for error in errors if isinstance(error, OperationalError)] == []
