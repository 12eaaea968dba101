"""Engines and transactions: SQLite tuned for concurrent writers, PostgreSQL as is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The execution option that marks a transaction as one that only reads.
READ_ONLY = "mentorlus_read_only"
# The execution option of a write that would rather not happen than wait for SQLite's lock.
NO_WAIT = "mentorlus_no_wait"
# What the database raises when it cannot serve at all (down, restarting, locked, full),
# as opposed to refusing a statement; the transaction has been rolled back.
UNAVAILABLE = (OperationalError, InterfaceError)


def unavailable_cause(error: OperationalError | InterfaceError) -> str:
    """Why the database cannot serve: locked, full or unreachable."""
    text = str(error.orig).lower()
    if "locked" in text:
        return "locked"
    if "full" in text:
        return "full"
    return "unreachable"


def unavailable_reason(error: OperationalError | InterfaceError) -> str:
    """The cause in words for a person (never the statement or its values)."""
    return {
        "locked": "the database is locked by another process",
        "full": "the database's disk is full",
        "unreachable": "the database cannot be reached",
    }[unavailable_cause(error)]


def make_engine(url: str) -> Engine:
    """Create an engine; on SQLite every transaction begins IMMEDIATE and waits for the lock."""
    # hide_parameters: an error's text would otherwise carry the statement's values (a
    # concrete question, a token) into every log that records the error.
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)

        @event.listens_for(engine, "begin")
        def _begin_postgresql(connection: Any) -> None:
            # One snapshot for all of a report's queries, as on SQLite.
            if connection.get_execution_options().get(READ_ONLY):
                connection.exec_driver_sql(
                    "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
                )

        return engine
    engine = create_engine(url, connect_args={"timeout": 30}, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own deferred BEGIN would make a read-then-write transaction
        # fail with "database is locked" instead of waiting: we issue BEGIN ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        options = connection.get_execution_options()
        if not options.get(READ_ONLY):
            if options.get(NO_WAIT):
                # One try for the lock; the connection's wait comes back when it is checked in.
                waits = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
                connection.info[NO_WAIT] = waits
                connection.exec_driver_sql("PRAGMA busy_timeout = 0")
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        # A reading transaction takes no lock (WAL gives it a snapshot): it never holds up a
        # writer. query_only makes a write in it fail at once.
        connection.exec_driver_sql("BEGIN")
        connection.exec_driver_sql("PRAGMA query_only = ON")
        connection.info[READ_ONLY] = True

    @event.listens_for(engine, "checkin")
    def _writable_again(dbapi_connection: Any, record: Any) -> None:
        if record.info.pop(READ_ONLY, False):
            dbapi_connection.execute("PRAGMA query_only = OFF")
        waits = record.info.pop(NO_WAIT, None)
        if waits is not None:
            dbapi_connection.execute(f"PRAGMA busy_timeout = {int(waits)}")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(
    sessions: sessionmaker[Session], *, read_only: bool = False, wait: bool = True
) -> Iterator[Session]:
    """One unit of work: commit when the block ends, roll back everything when it raises.

    read_only: for pages and reports that only read; writing in it fails.
    wait=False: on SQLite, fail at once (OperationalError, "locked") instead of waiting while
    another connection holds the write lock. PostgreSQL locks rows, not the database: there
    a write waits only for another one on the same rows, as always.
    """
    with sessions() as session, session.begin():
        if read_only or not wait:
            session.connection(execution_options={READ_ONLY: read_only, NO_WAIT: not wait})
        yield session


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    command.upgrade(alembic_config(engine), "head")
