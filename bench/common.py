"""What the benchmarks share: a fresh database for a run, and progress on stderr."""

from __future__ import annotations

import sqlite3
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from lifecycle.bootstrap import App


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def fresh_database(directory: Path, postgres: str | None, name: str) -> Iterator[str]:
    """The URL of an empty database: a SQLite file, or a new database on the server."""
    if postgres is None:
        yield f"sqlite:///{directory / f'{name}.db'}"
        return
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    database = f"mentorlus_bench_{name}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        yield make_url(postgres).set(database=database).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def server_version(app: App) -> str:
    if app.engine.dialect.name == "sqlite":
        return f"sqlite {sqlite3.sqlite_version}"
    with app.engine.connect() as connection:
        return f"postgresql {connection.exec_driver_sql('SHOW server_version').scalar()}"
