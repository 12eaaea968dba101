"""Backup and restore of the SQLite database, safe while the service runs.

`backup` copies the live database with SQLite's online backup API inside one read
transaction: the copy is one committed state, whatever the web and the workers write
meanwhile (WAL lets them go on). `restore` writes a backup into the database file through
the same API as one write transaction — all of it or nothing — and only while no other
process has the database open. PostgreSQL has its own tools: pg_dump and pg_restore.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from lifecycle.bootstrap import App
from lifecycle.errors import InvalidInput, Refused

POSTGRES_ADVICE = (
    "the database is PostgreSQL: back it up with pg_dump (pg_dump -Fc -f mentorlus.dump URL) "
    "and restore it with pg_restore, as the README's Backup section shows"
)


def database_file(app: App) -> Path:
    """The SQLite file the app uses; PostgreSQL is refused with the tools to use instead."""
    url = make_url(app.settings.database_url)
    if url.get_backend_name() != "sqlite":
        raise Refused(POSTGRES_ADVICE, rule="backend")
    if not url.database or url.database == ":memory:":
        raise Refused("the database is not a file", rule="backend")
    return Path(url.database).resolve()


def _table_counts(connection: sqlite3.Connection) -> dict[str, int]:
    names = [
        name
        for (name,) in connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name"
        )
    ]
    return {
        name: connection.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names
    }


def _check(connection: sqlite3.Connection, what: str) -> None:
    result = connection.execute("PRAGMA integrity_check").fetchone()[0]
    if result != "ok":
        raise Refused(f"{what} fails SQLite's integrity check: {result}", rule="integrity")


def backup(app: App, target: Path, *, force: bool = False) -> dict[str, Any]:
    """Copy the live database to `target` (written aside, then renamed into place)."""
    source = database_file(app)
    target = target.resolve()
    if target == source:
        raise Refused("the backup cannot replace the database itself", rule="backup_target")
    if target.exists() and not force:
        raise Refused(f"{target} exists; pass --force to replace it", rule="backup_target")
    if not target.parent.is_dir():
        raise InvalidInput("PATH", f"the folder {target.parent} does not exist")
    draft = target.with_name(f".{target.name}.{os.getpid()}.part")
    draft.unlink(missing_ok=True)
    raw = app.engine.raw_connection()
    try:
        live: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment] # pysqlite
        copy = sqlite3.connect(draft)
        try:
            # One read transaction: the counts and the copy see the same committed state.
            live.execute("BEGIN")
            counts = _table_counts(live)
            live.backup(copy)
            live.execute("ROLLBACK")
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            _check(copy, "the copy")
        finally:
            copy.close()
    except BaseException:
        draft.unlink(missing_ok=True)
        raise
    finally:
        raw.close()
    os.replace(draft, target)
    return {"backup": str(target), "bytes": target.stat().st_size, "rows": counts}


def restore(app: App, source: Path, *, force: bool = False) -> dict[str, Any]:
    """Replace the database with a backup, atomically, when no other process has it open."""
    target = database_file(app)
    source = source.resolve()
    if source == target:
        raise Refused("the backup is the database itself", rule="restore_source")
    if not source.is_file():
        raise InvalidInput("PATH", f"{source} does not exist")
    backup_db = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    try:
        try:
            _check(backup_db, str(source))
            revision = backup_db.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError as error:
            raise Refused(
                f"{source} is not a Mentorlus database: {error}", rule="restore_source"
            ) from None
        if target.exists() and not force:
            raise Refused(
                f"{target} exists; pass --force to replace it with the backup",
                rule="database_exists",
            )
        app.engine.dispose()  # our own pooled connections must not count as a user
        database = sqlite3.connect(target, timeout=0, isolation_level=None)
        try:
            # In exclusive locking mode the write lock, once taken, is kept until close:
            # nobody can open the database between the check and the restore.
            database.execute("PRAGMA locking_mode=EXCLUSIVE")
            try:
                database.execute("BEGIN EXCLUSIVE")
                database.execute("COMMIT")
            except sqlite3.OperationalError:
                raise Refused(
                    f"{target} is in use: stop the web server and the workers, then restore",
                    rule="database_in_use",
                ) from None
            backup_db.backup(database)  # one write transaction on the database
            _check(database, "the restored database")
            counts = _table_counts(database)
        finally:
            database.close()
    finally:
        backup_db.close()
    return {
        "database": str(target),
        "restored_from": str(source),
        "schema_revision": revision[0] if revision else None,
        "rows": counts,
    }
