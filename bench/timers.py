"""Benchmark: the worker's due-timer claim on a small and on a large timers table.

`make bench` runs it. For each of two sizes (`--small` 10,000 and `--large` 1,000,000 timer
rows) it

1. makes a fresh database with the product's migrations — its schema and indexes, nothing
   ANALYZEd: a SQLite file in a temporary directory, or with `--postgres URL` a new database
   on that server (dropped afterwards);
2. bulk-inserts, with Core executemany rather than the service path, four years of mentoring
   relations opening one after another (ids grow with time): each case with the audit events
   that entered its states and the timers those states start as workflows/mentoring.toml
   declares them (reminders, expiry, monthly check-ins that re-arm themselves). A timer whose
   moment came while its state lasted is fired (a few skipped), one whose state was left first
   is cancelled, one of a state still under way is pending and due later. Then `--due` (1,000)
   timers chosen at random through the table are made pending and due within the last two
   hours, as after a worker's downtime;
3. runs the worker's timer job as the worker does (`jobs.fire_due_timers`) with its claim,
   `jobs.due_timers`, timed: one pass claims every due timer batch by batch (500, 500, then
   an empty claim). Firing a timer is not measured: each batch is marked fired in one UPDATE
   just before the next claim, so that claim sees the table as it would, and after the pass
   the due timers are pending again. `claim_ms` is the time of one whole pass's claims, each
   claim its own transaction, commit included.

Passes alternate between the sizes (`--passes`, after two unmeasured each) so that both see
the same load on a shared machine. Every result is a `key=value` line on stdout, among them
the rows per status, the claim's query plan on each size and both medians; the last one is
`scan_1m_vs_10k=<ratio>`, the large table's median over the small one's (target ≤ 3).
Progress goes to stderr. docs/performance.md records the runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

# Python puts the script's folder first on sys.path, and bench/transitions.py would then
# shadow the `transitions` library that the workflows load.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # for bench.common

# The imports below come after the sys.path fix above (ruff allows it).
from sqlalchemy import Connection, Engine, event, update

from bench.common import fresh_database, log, server_version
from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.config import load_settings
from lifecycle.demo.scenarios import ManualClock
from lifecycle.schedule import jobs
from lifecycle.store import db
from lifecycle.store.models import MENTORING, AuditEvent, Base, Case, Timer, table

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
HISTORY = timedelta(days=4 * 365)
# After a worker's downtime the due timers are spread over the time it was down.
DOWNTIME = timedelta(hours=2)
INSERT_CHUNK = 10_000
WARM_UP_PASSES = 2

# A relation's states in order, how long it stays in each before moving on (days, uniform),
# and the timers each state starts (name, due after entering it, whether it re-arms).
PATH = (
    ("requested", "request", (1, 9), (("remind_mentor", 3, False), ("expire", 10, False))),
    (
        "first_meeting",
        "accept",
        (5, 25),
        (("meeting_date_missing", 14, False), ("go_on_question", 8, False)),
    ),
    ("agreement", "proceed", (2, 20), (("agreement_unsigned", 14, False),)),
    ("active", "sign", (90, 330), (("check_in", 30, True), ("agreement_ending", 166, False))),
)
# How many of those states a relation enters before it ends (declined at the request,
# stopped after the first meeting, no agreement, or closed after the agreement's term).
REACHED = {1: 25, 2: 15, 3: 10, 4: 50}
SKIPPED_SHARE = 0.05  # fired too late to matter, or its step refused


def label(rows: int) -> str:
    """10000 → 10k, 1000000 → 1m: the sizes in the result's keys."""
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}m"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}k"
    return str(rows)


# -- the database ------------------------------------------------------------------------------


@dataclass
class Rows:
    """The rows of relations opened so far, waiting to be inserted (cases first: the keys)."""

    last_event_id: int = 0  # of the chunks inserted before
    cases: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    timers: list[dict[str, Any]] = field(default_factory=list)

    def event(self, case_id: int, at: datetime, trigger: str, source: str | None, to: str) -> int:
        event_id = (self.events[-1]["id"] if self.events else self.last_event_id) + 1
        self.events.append(
            {
                "id": event_id,
                "case_id": case_id,
                "at": at,
                "actor_id": None,
                "actor_role": "system",
                "trigger": trigger,
                "from_state": source,
                "to_state": to,
                "comment": "",
            }
        )
        return event_id


def relation(rows: Rows, rng: random.Random, case_id: int, opened: datetime) -> None:
    """One mentoring case from its request on: its entries, their timers, where it is now."""
    reached = rng.choices(list(REACHED), weights=list(REACHED.values()))[0]
    entered, source, entry_id, entry_at = opened, None, 0, opened
    for state, trigger, (shortest, longest), specs in PATH[:reached]:
        if entered > NOW:
            break
        entry_id, entry_at = rows.event(case_id, entered, trigger, source, state), entered
        left = entered + timedelta(days=rng.uniform(shortest, longest))
        for name, days, repeat in specs:
            due = entered + timedelta(days=days)
            while repeat and due <= min(left, NOW):  # each round fired, the next one armed
                rows.timers.append(timer(case_id, entry_id, state, name, due, "fired", due))
                due += timedelta(days=days)
            if due <= min(left, NOW):
                status = "skipped" if rng.random() < SKIPPED_SHARE else "fired"
                rows.timers.append(timer(case_id, entry_id, state, name, due, status, due))
            elif left <= NOW:
                rows.timers.append(timer(case_id, entry_id, state, name, due, "cancelled", left))
            else:
                rows.timers.append(timer(case_id, entry_id, state, name, due, "pending", None))
        entered, source = left, state
    state = source
    if entered <= NOW:  # the relation has ended
        state = "declined" if source == "requested" else "closed"
        trigger = "decline" if source == "requested" else "close"
        entry_id, entry_at = rows.event(case_id, entered, trigger, source, state), entered
    rows.cases.append(
        {
            "id": case_id,
            "workflow": MENTORING,
            "state": state,
            "version": 1,
            "opened_at": opened,
            "updated_at": entry_at,
            "state_entered_at": entry_at,
            "entry_event_id": entry_id,
        }
    )


def timer(
    case_id: int,
    entry_id: int,
    state: str,
    name: str,
    due: datetime,
    status: str,
    finished: datetime | None,
) -> dict[str, Any]:
    return {
        "case_id": case_id,
        "entry_event_id": entry_id,
        "state": state,
        "name": name,
        "due_at": due,
        "status": status,
        "finished_at": finished,
        "note": "",
    }


def build(engine: Engine, *, timers: int, due: int, seed: int) -> tuple[list[int], Counter[str]]:
    """Insert `timers` timer rows with their cases and events; the ids of the due ones."""
    rng = random.Random(seed)
    due_positions = set(rng.sample(range(timers), due))
    statuses: Counter[str] = Counter()
    due_ids: list[int] = []
    rows = Rows()
    case_id = inserted = 0
    while inserted < timers:
        case_id += 1
        # Cases open evenly over the history, by how much of the table is written.
        opened = NOW - HISTORY + HISTORY * ((inserted + len(rows.timers)) / timers)
        relation(rows, rng, case_id, opened)
        if len(rows.timers) < INSERT_CHUNK and inserted + len(rows.timers) < timers:
            continue
        chunk = rows.timers[: timers - inserted]
        for position, row in enumerate(chunk, start=inserted):
            row["id"] = position + 1
            if position in due_positions:
                row["status"], row["finished_at"] = "pending", None
                row["due_at"] = NOW - DOWNTIME * rng.random()
                due_ids.append(row["id"])
            statuses[row["status"]] += 1
        with engine.begin() as connection:
            insert_rows(connection, Case, rows.cases)
            insert_rows(connection, AuditEvent, rows.events)
            insert_rows(connection, Timer, chunk)
        inserted += len(chunk)
        rows = Rows(last_event_id=rows.events[-1]["id"] if rows.events else rows.last_event_id)
    statuses["pending_due"] = len(due_ids)
    statuses["pending"] -= len(due_ids)
    return due_ids, statuses


def insert_rows(connection: Connection, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Rows straight into the model's table: executemany on SQLite, COPY on PostgreSQL.

    The statement goes to the driver as it is: SQLAlchemy's processing of every value (most
    of the cost of a million rows through `insert()`) is done here once per value, writing
    datetimes as `UTCDateTime` does — naive UTC, which SQLite keeps as this text.
    """
    name, columns = model.__tablename__, list(rows[0])
    if connection.dialect.name == "sqlite":
        values = [
            tuple(
                value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
                if isinstance(value, datetime)
                else value
                for value in (row[column] for column in columns)
            )
            for row in rows
        ]
        marks = ", ".join("?" * len(columns))
        connection.exec_driver_sql(
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({marks})", values
        )
        return
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    value.astimezone(UTC).replace(tzinfo=None)
                    if isinstance(value, datetime)
                    else value
                    for value in (row[column] for column in columns)
                ]
            )


# -- the claim ---------------------------------------------------------------------------------


class ClaimPass:
    """The worker's timer job on one database, in which only the claims are timed.

    `jobs.fire_due_timers` claims a batch with `jobs.due_timers` and fires each timer in it
    with `jobs.fire_timer`, until a batch comes back short. Here firing only notes the timer;
    the noted ones are marked fired in one UPDATE right before the next claim (not timed).
    """

    # The real claim, taken before `run` puts `timed_claim` in its place in `jobs`.
    claim = staticmethod(jobs.due_timers)

    def __init__(self, app: App, due_ids: list[int]) -> None:
        self.app = app
        self.due_ids = due_ids
        self.fired: list[int] = []
        self.claimed: list[int] = []
        self.claims = 0
        self.spent = 0.0

    def timed_claim(self, app: App, **options: Any) -> list[int]:
        self.mark(self.fired, status="fired", finished=NOW)
        self.fired = []
        began = time.perf_counter()
        ids = self.claim(app, **options)
        self.spent += time.perf_counter() - began
        self.claims += 1
        self.claimed += ids
        return ids

    def fire(self, app: App, timer_id: int) -> str:
        self.fired.append(timer_id)
        return "fired"

    def mark(self, ids: list[int], *, status: str, finished: datetime | None) -> None:
        if not ids:
            return
        timers = table(Timer)
        with self.app.unit() as tx:
            tx.session.execute(
                update(timers)
                .where(timers.c.id.in_(ids))
                .values(status=status, finished_at=finished)
            )

    def run(self) -> tuple[float, int]:
        """One pass: seconds spent claiming, and how many claims it took."""
        self.claims, self.spent, self.fired, self.claimed = 0, 0.0, [], []
        with (
            mock.patch.object(jobs, "due_timers", self.timed_claim),
            mock.patch.object(jobs, "fire_timer", self.fire),
        ):
            counts = jobs.fire_due_timers(self.app)
        self.mark(self.due_ids, status="pending", finished=None)
        assert counts["fired"] == len(self.due_ids), counts
        assert sorted(self.claimed) == sorted(self.due_ids), "claimed other timers than the due"
        return self.spent, self.claims


def claim_plan(app: App) -> str:
    """How the database runs the claim's query, as the worker issues it."""
    issued: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "timers" in statement:
            issued.append((statement, parameters))

    event.listen(app.engine, "before_cursor_execute", record)
    try:
        jobs.due_timers(app)
    finally:
        event.remove(app.engine, "before_cursor_execute", record)
    (statement, parameters), *_ = issued
    with app.engine.connect() as connection:
        if app.engine.dialect.name == "sqlite":
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            return " / ".join(str(row[-1]) for row in plan)
        plan = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return " / ".join(" ".join(str(row[0]).split()) for row in plan)


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000, help="timer rows, small table")
    parser.add_argument("--large", type=int, default=1_000_000, help="timer rows, large table")
    parser.add_argument("--due", type=int, default=1_000, help="timers due now in each table")
    parser.add_argument("--passes", type=int, default=30, help="measured passes per size")
    parser.add_argument("--seed", type=int, default=7, help="seed of the rows' randomness")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to run on instead")
    args = parser.parse_args()

    sizes = (args.small, args.large)
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mentorlus-")))
        passes: dict[int, ClaimPass] = {}
        for rows in sizes:
            url = stack.enter_context(fresh_database(directory, args.postgres, label(rows)))
            engine = db.make_engine(url)
            db.migrate(engine)
            log(f"{label(rows)}: inserting {rows} timers with their cases and events")
            began = time.perf_counter()
            due_ids, statuses = build(engine, timers=rows, due=args.due, seed=args.seed)
            print(f"build_s_{label(rows)}={time.perf_counter() - began:.1f}")
            engine.dispose()
            for status, count in sorted(statuses.items()):
                print(f"rows_{label(rows)}.{status}={count}")
            settings = replace(load_settings(environ={}), database_url=url)
            app = bootstrap.build(settings, clock=ManualClock(NOW))
            stack.callback(app.engine.dispose)
            print(f"plan_{label(rows)}={claim_plan(app)}")
            passes[rows] = ClaimPass(app, due_ids)

        for claim_pass in passes.values():
            for _ in range(WARM_UP_PASSES):
                claim_pass.run()
        log(f"measuring {args.passes} passes per size, alternating")
        spent: dict[int, list[float]] = {rows: [] for rows in sizes}
        claims = 0
        for index in range(args.passes):
            for rows in sizes[index % 2 :] + sizes[: index % 2]:
                seconds, claims = passes[rows].run()
                spent[rows].append(seconds * 1000)
        version = server_version(next(iter(passes.values())).app)

    medians = {rows: statistics.median(spent[rows]) for rows in sizes}
    # The machine, and how busy it was: compare ratios, not absolutes, on a shared machine.
    print(f"cpus={os.cpu_count()}")
    print(f"python={platform.python_version()}")
    print(f"database={version}")
    print(f"load_avg_1m_before={load_before:.2f}")
    print(f"load_avg_1m_after={os.getloadavg()[0]:.2f}")
    print(f"due={args.due}")
    print(f"passes={args.passes}")
    print(f"claims_per_pass={claims}")
    for rows in sizes:
        print(f"claim_ms_{label(rows)}={medians[rows]:.3f}")
        print(f"claim_ms_{label(rows)}_range={min(spent[rows]):.3f}-{max(spent[rows]):.3f}")
    ratio = medians[args.large] / medians[args.small]
    print(f"scan_{label(args.large)}_vs_{label(args.small)}={ratio:.2f}")


if __name__ == "__main__":
    main()
