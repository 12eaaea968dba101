"""The composition root: build the app for the CLI, the worker, the web and the tests alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from lifecycle.config import Settings
from lifecycle.store import db
from lifecycle.workflows.effects import EFFECTS
from lifecycle.workflows.engine import Tx
from lifecycle.workflows.guards import GUARDS
from lifecycle.workflows.loader import load_workflows
from lifecycle.workflows.spec import Registries, Workflow
from lifecycle.workflows.timers import ANCHORS

REGISTRIES = Registries(guards=GUARDS, effects=EFFECTS, anchors=ANCHORS)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class App:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    workflows: dict[str, Workflow]
    clock: Callable[[], datetime]

    @contextmanager
    def unit(self, *, wait: bool = True) -> Iterator[Tx]:
        """A transaction for one use case: commits at the end, rolls back on any error.

        wait=False: for a write that may be skipped, which on SQLite fails at once rather than
        wait for another process's write lock (db.transaction)."""
        with db.transaction(self.sessions, wait=wait) as session:
            yield Tx(session, self.settings, self.workflows, self.clock())

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A transaction that only reads: it never holds up a writer, and cannot write."""
        with db.transaction(self.sessions, read_only=True) as session:
            yield Tx(session, self.settings, self.workflows, self.clock())


def build(settings: Settings, *, clock: Callable[[], datetime] = utc_now) -> App:
    """Load and validate the workflows, connect the database (no schema change here)."""
    workflows = load_workflows(settings, REGISTRIES)
    engine = db.make_engine(settings.database_url)
    return App(settings, engine, db.session_factory(engine), workflows, clock)
