"""Benchmark: mentoring transitions through the full service path, against bare commits.

`make bench` runs it. On a fresh SQLite file in a temporary directory it

1. lists mentors through the real application steps (not timed) and drives N mentoring
   relations through request → accept → schedule_meeting → proceed twice → draft_agreement →
   sign twice → close, every step through `services` in its own `app.unit()` (one commit each,
   as the product does). `advance_per_s` counts the five state-changing steps (request,
   accept, the second proceed, the second sign, close) over the time spent in exactly those
   calls, commit included; `all_steps_per_s` counts all nine steps over all of their time;
2. makes the same number of bare commits through the same engine and session factory: an
   ORM `UPDATE cases SET state, version = version + 1` and one audit INSERT each
   (`raw_per_s`), one right after each state-changing step, so that both see the same load
   on a shared machine;
3. in a fresh child process, loads 100,000 active mentoring cases in batches of 1,000 and
   binds each to the shared workflow machine, and reports the peak resident memory.

With `--postgres URL` every part runs on a new database on that PostgreSQL server instead
(dropped afterwards), and the bare commits go to the same server.

Every result is a `key=value` line on stdout; the last one is `advance_vs_raw=<ratio>`
(target ≥ 0.5). Progress goes to stderr. docs/performance.md records a full run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# This file shares its name with the `transitions` library, and Python puts the script's
# folder first on sys.path: without this, `import transitions` would import this file.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # for bench.common

# The imports below come after the sys.path fix above (ruff allows it).
from sqlalchemy import func, insert, select, update

from bench.common import fresh_database, log, server_version
from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases import services
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import Refused
from lifecycle.store import db
from lifecycle.store.models import MENTORING, AuditEvent, Case, Person, Relation
from lifecycle.workflows.spec import Context

START = datetime(2026, 9, 1, 7, 0, tzinfo=UTC)
COORDINATOR = "koordinaator@bench.example"
COMMITTEE = ["komisjon1@bench.example", "komisjon2@bench.example", "komisjon3@bench.example"]
# Every relation is open at once between the phases: enough mentors at the largest capacity
# a mentor may declare (services: at most 50 mentees at a time).
CAPACITY = 50
# The steps that move a relation to a new state; the others keep it where it is.
STATE_CHANGING = ("request", "accept", "proceed", "sign", "close")
RAW_STATES = ("requested", "first_meeting", "agreement", "active", "closed")


def make_app(url: str, clock: ManualClock) -> App:
    """The migrated database and the app on it, with the staff the steps need."""
    engine = db.make_engine(url)
    db.migrate(engine)
    engine.dispose()
    app = bootstrap.build(replace(load_settings(environ={}), database_url=url), clock=clock)
    scenarios.add_staff(app, name="Koordinaator", email=COORDINATOR, role="coordinator")
    for index, email in enumerate(COMMITTEE, start=1):
        scenarios.add_staff(app, name=f"Komisjoniliige {index}", email=email, role="committee")
    return app


# -- 1. the full service path ------------------------------------------------------------------


def mentors_for(relations: int) -> int:
    return max(20, -(-relations // CAPACITY))


def list_mentors(app: App, clock: ManualClock, *, count: int) -> list[str]:
    """Mentors entered by the coordinator and listed through the real steps."""
    emails = []
    for index in range(count):
        email = f"mentor{index}@bench.example"
        data = scenarios.applicant(email, f"Mentor {index}", capacity=CAPACITY)
        ref = scenarios.submit_application(app, data, actor=COORDINATOR)
        scenarios.bring_application(
            app,
            clock,
            ref,
            "listed",
            coordinator=COORDINATOR,
            committee=COMMITTEE,
            applicant_email=email,
        )
        emails.append(email)
    return emails


class Baseline:
    """Bare commits, each right after a state-changing step so both see the same machine load.

    One commit is an ORM `UPDATE cases SET state, version = version + 1` and one audit
    INSERT, through the app's engine and session factory (on SQLite the same pragmas and
    BEGIN IMMEDIATE), on rows of the same `cases` table that no service step reads.
    """

    def __init__(self, app: App, rows: int) -> None:
        self.sessions = app.sessions
        self.now = app.clock()
        self.commits = 0
        self.spent = 0.0
        # The database numbers the rows: ids given here would leave PostgreSQL's sequence
        # behind, and the next request's case would take one of them.
        with app.unit() as tx:
            self.case_ids = list(
                tx.session.scalars(
                    insert(Case).returning(Case.id, sort_by_parameter_order=True),
                    [
                        {
                            "workflow": "baseline",
                            "state": RAW_STATES[-1],
                            "version": 1,
                            "opened_at": self.now,
                            "updated_at": self.now,
                            "state_entered_at": self.now,
                        }
                        for _ in range(rows)
                    ],
                )
            )

    def commit(self) -> None:
        case_id = self.case_ids[self.commits % len(self.case_ids)]
        turn = self.commits // len(self.case_ids)
        from_state, to_state = RAW_STATES[turn - 1], RAW_STATES[turn % len(RAW_STATES)]
        began = time.perf_counter()
        with db.transaction(self.sessions) as session:
            session.execute(
                update(Case)
                .where(Case.id == case_id)
                .values(state=to_state, version=Case.version + 1)
            )
            session.add(
                AuditEvent(
                    case_id=case_id,
                    at=self.now,
                    actor_id=None,
                    actor_role="system",
                    trigger="baseline",
                    from_state=from_state,
                    to_state=to_state,
                    comment="",
                )
            )
        self.spent += time.perf_counter() - began
        self.commits += 1


def advance(app: App, clock: ManualClock, relations: int) -> tuple[dict[str, float], Baseline]:
    """Drive the relations to closed, one phase at a time; seconds spent per step name."""
    mentors = list_mentors(app, clock, count=mentors_for(relations))
    baseline = Baseline(app, relations)
    spent: dict[str, float] = defaultdict(float)

    def step(name: str, ref: str, trigger: str, actor: str, **values: Any) -> None:
        """One step in its own transaction, timed with its commit; a bare commit follows."""
        began = time.perf_counter()
        with app.unit() as tx:
            services.advance_case(tx, ref=ref, trigger=trigger, actor_email=actor, values=values)
        spent[name] += time.perf_counter() - began
        if name in STATE_CHANGING:
            baseline.commit()

    def phase(name: str) -> None:
        log(f"  {name}: {spent[name]:.1f} s")

    cases: list[tuple[str, str, str]] = []  # (ref, mentor, mentee)
    for index in range(relations):
        mentor = mentors[index % len(mentors)]
        mentee = f"mentee{index}@bench.example"
        data = scenarios.mentee(mentee, f"Juhendatav {index}", mentor)
        began = time.perf_counter()
        with app.unit() as tx:
            ref = services.submit_request(tx, data=data).ref
        spent["request"] += time.perf_counter() - began
        baseline.commit()
        cases.append((ref, mentor, mentee))
    phase("request")

    clock.advance(days=1)
    for ref, mentor, _ in cases:
        step("accept", ref, "accept", mentor)
    phase("accept")
    meeting = clock.now + timedelta(days=3)
    for ref, mentor, _ in cases:
        step("schedule_meeting", ref, "schedule_meeting", mentor, starts_at=meeting, place="video")
    phase("schedule_meeting")

    clock.now = meeting + timedelta(hours=3)
    for ref, mentor, _ in cases:
        step("proceed_first", ref, "proceed", mentor)
    phase("proceed_first")
    for ref, _, mentee in cases:
        step("proceed", ref, "proceed", mentee)
    phase("proceed")

    clock.advance(days=1)
    starts = clock.now.date()
    for ref, _, mentee in cases:
        step(
            "draft_agreement",
            ref,
            "draft_agreement",
            mentee,
            goal="Selge karjääriplaan",
            starts_on=starts,
            ends_on=starts + timedelta(days=180),
            meeting_rhythm="kord kuus",
            fee="tasuta",
            confidentiality=True,
        )
    phase("draft_agreement")
    for ref, mentor, _ in cases:
        step("sign_first", ref, "sign", mentor)
    phase("sign_first")
    for ref, _, mentee in cases:
        step("sign", ref, "sign", mentee)
    phase("sign")

    clock.advance(days=30)
    for ref, _, mentee in cases:
        step("close", ref, "close", mentee, outcome="completed")
    phase("close")
    log(f"  baseline: {baseline.commits} bare commits, {baseline.spent:.1f} s")

    with app.unit() as tx:
        closed = tx.session.scalar(
            select(func.count())
            .select_from(Case)
            .where(Case.workflow == MENTORING, Case.state == "closed")
        )
    assert closed == relations, f"{closed} of {relations} relations closed"
    return dict(spent), baseline


# -- 3. memory ---------------------------------------------------------------------------------


def rss_kb() -> int:
    """The resident set size now (Linux), in KB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def peak_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux


def seed_cases(app: App, count: int) -> None:
    """Active mentoring cases with their relations, inserted in bulk (setup, not measured)."""
    now = app.clock()
    with app.unit() as tx:
        mentor = Person(name="Mentor", email="m@bench.example", role=None, created_at=now)
        mentee = Person(name="Juhendatav", email="j@bench.example", role=None, created_at=now)
        tx.session.add_all([mentor, mentee])
        tx.session.flush()
        chunk = 10_000
        for first in range(1, count + 1, chunk):
            ids = range(first, min(first + chunk, count + 1))
            tx.session.execute(
                insert(Case),
                [
                    {
                        "id": case_id,
                        "workflow": MENTORING,
                        "state": "active",
                        "version": 1,
                        "opened_at": now,
                        "updated_at": now,
                        "state_entered_at": now,
                    }
                    for case_id in ids
                ],
            )
            tx.session.execute(
                insert(Relation),
                [
                    {
                        "case_id": case_id,
                        "mentor_id": mentor.id,
                        "mentee_id": mentee.id,
                        "topic": "career",
                        "question": "Kuidas kujundada oma karjääri järgmised viis aastat?",
                        "mentee_is_manager": False,
                        "mentee_organisation": "Pärnu Sotsiaalkeskus",
                        "requested_at": now,
                    }
                    for case_id in ids
                ],
            )


def measure_memory(count: int, batch: int, postgres: str | None) -> None:
    """Load `count` cases in batches and bind each to the shared machine; print the memory."""
    with (
        tempfile.TemporaryDirectory(prefix="mentorlus-bench-") as directory,
        fresh_database(Path(directory), postgres, "transitions") as url,
    ):
        clock = ManualClock(START)
        app = make_app(url, clock)
        seed_cases(app, count)
        workflow = app.workflows[MENTORING]
        mentor_roles = frozenset({"mentor"})
        gc.collect()
        before = rss_kb()
        loaded = allowed = refused = moved = 0
        last_id = 0
        while True:
            with app.sessions() as session:
                rows = session.execute(
                    select(Case, Relation)
                    .join(Relation, Relation.case_id == Case.id)
                    .where(Case.id > last_id)
                    .order_by(Case.id)
                    .limit(batch)
                ).all()
                if not rows:
                    break
                for case, relation in rows:
                    loaded += 1
                    allowed += len(workflow.triggers_for(case.state, mentor_roles))
                    ctx = Context(
                        session, app.settings, clock(), case, relation, None, mentor_roles
                    )
                    try:
                        workflow.fire(ctx, "accept")  # not possible from 'active'
                    except Refused:
                        refused += 1
                    # The shared machine moves the row in memory; closing the session
                    # without a commit throws the change away.
                    moved += workflow.machine.events["close"].trigger(case, ctx=ctx)
                last_id = rows[-1][0].id
        gc.collect()
        after = rss_kb()
        peak = max(peak_rss_kb(), after)  # ru_maxrss can lag the current RSS a little
        pinned = len(workflow.machine.models)
        app.engine.dispose()
    assert loaded == count and refused == count and moved == count, (loaded, refused, moved)
    print(f"cases_loaded={loaded}")
    print(f"machine_models_pinned={pinned}")
    print(f"rss_before_load_mb={before / 1024:.1f}")
    print(f"rss_after_load_mb={after / 1024:.1f}")
    print(f"peak_rss_mb={peak / 1024:.1f}")
    print(f"rss_growth_mb={(peak - before) / 1024:.1f}")


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relations", type=int, default=20_000, help="relations to advance")
    parser.add_argument("--cases", type=int, default=100_000, help="cases loaded for memory")
    parser.add_argument("--batch", type=int, default=1_000, help="cases loaded at once")
    parser.add_argument("--postgres", metavar="URL", help="a PostgreSQL server to run on instead")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        measure_memory(args.cases, args.batch, args.postgres)
        return

    # Memory first, in a fresh process: its peak must not include the other parts.
    log(f"memory: {args.cases} cases in batches of {args.batch} (child process)")
    memory = subprocess.run(
        [
            sys.executable,
            __file__,
            "--memory-child",
            f"--cases={args.cases}",
            f"--batch={args.batch}",
            *([f"--postgres={args.postgres}"] if args.postgres else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout

    relations = args.relations
    load_before = os.getloadavg()[0]
    with (
        tempfile.TemporaryDirectory(prefix="mentorlus-bench-") as directory,
        fresh_database(Path(directory), args.postgres, "transitions") as url,
    ):
        clock = ManualClock(START)
        app = make_app(url, clock)
        log(
            f"advance: {relations} relations, {mentors_for(relations)} mentors, "
            "a bare commit after each move"
        )
        began = time.perf_counter()
        spent, baseline = advance(app, clock, relations)
        wall = time.perf_counter() - began
        version = server_version(app)
        app.engine.dispose()

    transitions = len(STATE_CHANGING) * relations
    assert baseline.commits == transitions
    steps = len(spent) * relations
    advance_per_s = transitions / sum(spent[name] for name in STATE_CHANGING)
    raw_per_s = baseline.commits / baseline.spent
    # The machine, and how busy it was: compare ratios, not absolutes, on a shared machine.
    print(f"cpus={os.cpu_count()}")
    print(f"python={platform.python_version()}")
    print(f"database={version}")
    print(f"load_avg_1m_before={load_before:.2f}")
    print(f"load_avg_1m_after={os.getloadavg()[0]:.2f}")
    print(f"relations={relations}")
    print(f"transitions={transitions}")
    print(f"steps={steps}")
    print(f"wall_s={wall:.1f}")
    for name, seconds in spent.items():
        print(f"step_ms.{name}={seconds / relations * 1000:.3f}")
    print(f"all_steps_per_s={steps / sum(spent.values()):.0f}")
    print(f"advance_per_s={advance_per_s:.0f}")
    print(f"raw_commits={baseline.commits}")
    print(f"raw_per_s={raw_per_s:.0f}")
    print(memory, end="")
    print(f"advance_vs_raw={advance_per_s / raw_per_s:.2f}")


if __name__ == "__main__":
    main()
