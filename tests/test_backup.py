"""Backup and restore of the SQLite database, taken while a writer keeps advancing cases.

The writer is a thread with its own App (its own connections), stepping applications back
and forth through real transactions; backups are taken meanwhile, restored into fresh
files and compared with what the backup saw in its own read transaction.
"""

from __future__ import annotations

import gc
import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cli.main import main
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import Refused
from lifecycle.privacy import backup
from lifecycle.store import db
from lifecycle.store.models import AuditEvent, Case, Timer
from tests.conftest import COMMITTEE, COORDINATOR, START


def build(path: Path, clock: ManualClock | None = None) -> App:
    settings = replace(load_settings(environ={}), database_url=f"sqlite:///{path}")
    return bootstrap.build(settings, clock=clock or ManualClock(START))


@pytest.fixture
def live(tmp_path: Path, sqlite_template: Path) -> Iterator[App]:
    """The service's database, with its staff."""
    path = tmp_path / "live.db"
    shutil.copyfile(sqlite_template, path)
    app = build(path)
    scenarios.add_staff(app, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    for email in COMMITTEE:
        scenarios.add_staff(app, name=email, email=email, role="committee")
    yield app
    app.engine.dispose()


class Writer(threading.Thread):
    """Keeps advancing cases in its own transactions until stopped (or a bounded count)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.clock = ManualClock(START)
        self.app = build(path, self.clock)
        self.steps = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            refs: list[tuple[str, str]] = []
            deadline = time.monotonic() + 60
            while not self.stop.is_set() and time.monotonic() < deadline and self.steps < 5000:
                if len(refs) < 8:
                    email = f"kandidaat{len(refs)}@example.org"
                    data = scenarios.applicant(email, f"Kandidaat {len(refs)}")
                    ref = scenarios.submit_application(self.app, data, actor=COORDINATOR)
                    scenarios.step(self.app, ref, "begin_review", COORDINATOR)
                    refs.append((ref, email))
                ref, email = refs[self.steps % len(refs)]
                self.clock.advance(minutes=5)
                with self.app.unit() as tx:
                    state = tx.session.scalar(select(Case.state).where(Case.id == int(ref[2:])))
                if state == "eligibility":
                    scenarios.step(self.app, ref, "request_info", COORDINATOR, message="Diplom?")
                else:
                    scenarios.step(self.app, ref, "provide_info", email, message="Saadetud.")
                self.steps += 1
        except BaseException as error:  # reported by the test
            self.error = error
        finally:
            self.app.engine.dispose()


def counts(path: Path) -> dict[str, int]:
    with closing(sqlite3.connect(path)) as connection:
        return backup._table_counts(connection)


def assert_consistent(path: Path) -> None:
    """Every case's state is the replay of its audit trail; its timers belong to that state."""
    app = build(path)
    try:
        with app.unit() as tx:
            cases = tx.session.scalars(select(Case)).all()
            assert cases
            for case in cases:
                trail = tx.session.scalars(
                    select(AuditEvent).where(AuditEvent.case_id == case.id).order_by(AuditEvent.id)
                ).all()
                state, entry = None, None
                for event in trail:
                    assert event.from_state == state, f"{case.ref}: the trail is broken"
                    if event.to_state != state:
                        entry = event.id
                    state = event.to_state
                assert (state, entry) == (case.state, case.entry_event_id), case.ref
                assert case.version == len(trail), case.ref  # one version per step
                pending = tx.session.scalars(
                    select(Timer.entry_event_id).where(
                        Timer.case_id == case.id, Timer.status == "pending"
                    )
                ).all()
                assert set(pending) <= {case.entry_event_id}, case.ref
    finally:
        app.engine.dispose()


# The newest migration: a backup of a current database carries it.
HEAD = ScriptDirectory(str(db.MIGRATIONS_DIR)).get_current_head()


def test_backups_taken_while_cases_advance_restore_to_the_state_they_saw(
    live: App, tmp_path: Path
) -> None:
    live_path = backup.database_file(live)
    writer = Writer(live_path)
    writer.start()
    while writer.steps < 30 and writer.is_alive():
        time.sleep(0.01)
    taken = []
    steps_before = writer.steps
    for number in range(3):
        taken.append(backup.backup(live, tmp_path / f"backup-{number}.db"))
        time.sleep(0.05)
    steps_during = writer.steps - steps_before
    writer.stop.set()
    writer.join(timeout=60)
    assert writer.error is None, writer.error
    assert steps_during > 0  # the writer went on while the backups were taken

    for number, result in enumerate(taken):
        copy = tmp_path / f"backup-{number}.db"
        restored = tmp_path / f"restored-{number}.db"
        done = backup.restore(build(restored), copy)

        assert counts(copy) == result["rows"]  # the copy is what its transaction counted
        assert counts(restored) == done["rows"] == result["rows"]
        with closing(sqlite3.connect(restored)) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert done["schema_revision"] == HEAD
        assert_consistent(restored)
    # Each backup is a point in time: later ones saw more, the live database most.
    cases = [result["rows"]["audit_events"] for result in taken]
    assert cases == sorted(cases) and counts(live_path)["audit_events"] > cases[0]


def test_restore_replaces_an_idle_database_only_with_force(live: App, tmp_path: Path) -> None:
    scenarios.submit_application(
        live, scenarios.applicant("varajane@example.org", "Varajane"), actor=COORDINATOR
    )
    copy = tmp_path / "backup.db"
    saved = backup.backup(live, copy)["rows"]
    scenarios.submit_application(
        live, scenarios.applicant("hiline@example.org", "Hiline"), actor=COORDINATOR
    )
    assert counts(backup.database_file(live))["cases"] == saved["cases"] + 1

    with pytest.raises(Refused) as refusal:
        backup.restore(live, copy)
    assert refusal.value.rule == "database_exists"

    backup.restore(live, copy, force=True)
    assert counts(backup.database_file(live)) == saved
    assert_consistent(backup.database_file(live))


def test_restore_refuses_a_database_in_use_even_with_force(live: App, tmp_path: Path) -> None:
    copy = tmp_path / "backup.db"
    backup.backup(live, copy)
    service = build(backup.database_file(live))  # another process's open connection
    try:
        with service.unit() as tx:
            tx.session.scalar(select(Case.id))
        before = counts(backup.database_file(live))
        scenarios.submit_application(
            live, scenarios.applicant("hiline@example.org", "Hiline"), actor=COORDINATOR
        )

        with pytest.raises(Refused) as refusal:
            backup.restore(live, copy, force=True)

        assert refusal.value.rule == "database_in_use"
        assert counts(backup.database_file(live))["cases"] == before["cases"] + 1
    finally:
        service.engine.dispose()


def test_backup_refuses_to_overwrite_a_file_or_the_database_itself(
    live: App, tmp_path: Path
) -> None:
    existing = tmp_path / "old-backup.db"
    existing.write_bytes(b"an older backup")

    with pytest.raises(Refused, match="pass --force"):
        backup.backup(live, existing)
    with pytest.raises(Refused, match="cannot replace the database itself"):
        backup.backup(live, backup.database_file(live), force=True)

    assert existing.read_bytes() == b"an older backup"
    backup.backup(live, existing, force=True)
    assert counts(existing) == counts(backup.database_file(live))


def test_restore_refuses_a_file_that_is_not_a_mentorlus_database(live: App, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    before = counts(backup.database_file(live))

    with pytest.raises(Refused) as refusal:
        backup.restore(live, junk, force=True)

    assert refusal.value.rule == "restore_source"
    assert counts(backup.database_file(live)) == before


def test_backup_and_restore_commands(
    live: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", live.settings.database_url)
    path = tmp_path / "nightly.db"
    live.engine.dispose()  # the test's own connections would count as a running service

    # Each command closes its connections itself: none may be left for the collector to
    # close, or the restore would find the database in use by the backup before it.
    gc.disable()
    try:
        assert main(["--json", "backup", str(path)]) == 0
        rows = json.loads(capsys.readouterr().out)["rows"]
        assert main(["restore", str(path)]) == 1
        assert "pass --force" in capsys.readouterr().err
        assert main(["--json", "restore", str(path), "--force"]) == 0
    finally:
        gc.enable()

    assert json.loads(capsys.readouterr().out)["rows"] == rows == counts(path)


def test_postgresql_is_sent_to_pg_dump(
    live: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", "postgresql+psycopg://mentorlus@127.0.0.1/x")

    assert main(["backup", str(tmp_path / "x.db")]) == 1
    assert "pg_dump" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "x.db")]) == 1
    assert "pg_dump" in capsys.readouterr().err
    assert not (tmp_path / "x.db").exists()
