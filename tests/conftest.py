"""Fixtures: an app on a real SQLite file or a real PostgreSQL database, with a manual clock.

PostgreSQL: set MENTORLUS_TEST_DATABASE_URL to a server where the user may create
databases (.ci/run does). Without it those tests skip — except under CI=true, where
they fail, so a CI run never passes without PostgreSQL.

Helpers for the test modules (`from tests.conftest import ...`): the staff's addresses,
`bring` / `list_mentor`, which move applications through the real steps by that staff,
`confirm_by_email`, which confirms a public submission as the owner of its address does, and
`write_lock_held` for what must go on while another process writes to SQLite.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import create_engine, event, make_url, select, text

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases import accounts
from lifecycle.config import Settings, load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.store import db
from lifecycle.store.models import ActionToken, OutboxMessage
from lifecycle.web.app import create
from lifecycle.workflows import links

PG_URL = os.environ.get("MENTORLUS_TEST_DATABASE_URL")
START = datetime(2026, 9, 1, 7, 0, tzinfo=UTC)

COORDINATOR = "liis.lepik@esta.example"
COMMITTEE = ["helle.hein@esta.example", "toomas.tuul@esta.example", "sirje.saar@esta.example"]
STAFF_PASSWORD = "pikk-parool-2026"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test gets a copy of it."""
    path = tmp_path_factory.mktemp("template") / "mentorlus.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database; each test gets a fresh copy of it."""
    if not PG_URL:
        if os.environ.get("CI") == "true":
            pytest.fail("MENTORLUS_TEST_DATABASE_URL is not set: PostgreSQL tests must run in CI")
        pytest.skip("PostgreSQL not configured (set MENTORLUS_TEST_DATABASE_URL)")
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"mentorlus_tpl_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(
    backend: str, tmp_path: os.PathLike[str], request: pytest.FixtureRequest
) -> Iterator[str]:
    if backend == "sqlite":
        path = Path(tmp_path) / "mentorlus.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    template = request.getfixturevalue("pg_template")
    assert PG_URL
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"mentorlus_t_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return replace(load_settings(environ={}), database_url=database_url)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def app(settings: Settings, clock: ManualClock) -> Iterator[App]:
    built = bootstrap.build(settings, clock=clock)
    scenarios.add_staff(built, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    for index, email in enumerate(COMMITTEE):
        scenarios.add_staff(
            built, name=f"Komisjoniliige {index + 1}", email=email, role="committee"
        )
    yield built
    built.engine.dispose()


# -- cases through the real steps, by the staff above ----------------------------------------


@pytest.fixture
def web(app: App, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The web app, with COORDINATOR and COMMITTEE[0] as users (STAFF_PASSWORD); not logged in."""
    monkeypatch.setattr(accounts, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024))
    with app.unit() as tx:
        accounts.add_user(
            tx, name="Liis", email=COORDINATOR, role="coordinator", password=STAFF_PASSWORD
        )
        accounts.add_user(
            tx, name="Helle", email=COMMITTEE[0], role="committee", password=STAFF_PASSWORD
        )
    with TestClient(create(app), follow_redirects=False) as client:
        yield client


def bring(app: App, clock: ManualClock, ref: str, state: str, email: str) -> None:
    """Move the submitted application `ref` to `state` through the real steps (a day or so
    apart), taken by COORDINATOR and the COMMITTEE; `email` is the applicant's, for the steps
    the applicant takes (pause, retire, withdraw)."""
    scenarios.bring_application(
        app,
        clock,
        ref,
        state,
        coordinator=COORDINATOR,
        committee=COMMITTEE,
        applicant_email=email,
    )


def list_mentor(
    app: App, clock: ManualClock, email: str, name: str, **applicant_overrides: Any
) -> str:
    """A mentor listed in the directory: `scenarios.applicant(email, name, ...)` entered by
    COORDINATOR and brought to "listed" through the real steps; the application's case ref."""
    data = scenarios.applicant(email, name, **applicant_overrides)
    ref = scenarios.submit_application(app, data, actor=COORDINATOR)
    bring(app, clock, ref, "listed", email)
    return ref


def confirmation_link(app: App, email: str) -> str:
    """The path of the newest link mailed to `email` to confirm a public submission."""
    with app.read() as tx:
        message = tx.session.scalars(
            select(OutboxMessage)
            .where(
                OutboxMessage.to_email == email.strip().lower(),
                OutboxMessage.template.in_(("request_confirm", "application_confirm")),
            )
            .order_by(OutboxMessage.id.desc())
        ).first()
        assert message is not None, f"no confirmation link was mailed to {email}"
        token = tx.session.get(ActionToken, message.link_token_id)
        assert token is not None
        return links.url(token, tx.settings).removeprefix(tx.settings.base_url)


def confirm_by_email(client: TestClient, app: App, email: str) -> Response:
    """Do what the owner of `email` does before their public request or application takes
    effect: follow the confirmation link mailed there, and press the button on its page.
    The answer to the button: the done page with the case's ref, or the refusal."""
    followed = client.get(confirmation_link(app, email), follow_redirects=False)
    assert followed.status_code == 303, followed.text
    page = client.get(followed.headers["location"], follow_redirects=False)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf, "no CSRF token on the confirmation page"
    return client.post(
        followed.headers["location"], data={"csrf": csrf.group(1)}, follow_redirects=False
    )


def wait_briefly_for_locks(app: App) -> None:
    """The app's SQLite connections wait 0.3 s for another's write lock, then fail as they
    would after the engine's 30 s: tests of a held lock stay fast."""

    @event.listens_for(app.engine, "connect")
    def _wait_briefly(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=300")

    app.engine.dispose()  # connections made before wait as long as ever


def another_connection(app: App) -> sqlite3.Connection:
    """A connection of another process's kind to the app's SQLite file, usable from any thread."""
    path = app.engine.url.database
    assert path is not None, "a SQLite file"
    return sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)


@contextmanager
def write_lock_held(app: App) -> Iterator[None]:
    """Meanwhile another connection holds the SQLite database's write lock."""
    wait_briefly_for_locks(app)
    locker = another_connection(app)
    locker.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        locker.execute("ROLLBACK")
        locker.close()
