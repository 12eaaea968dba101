"""The PostgreSQL run: two web processes and two workers under load, then faults, then checks.

`run_postgres(directory, seconds=...)` sets up a private cluster and the data (listed
mentors, a coordinator, an open intake round) through the real service path, starts the
sink and the four service processes, drives the load (tests/reliability/load.py) and,
meanwhile, goes round a cycle of faults until the time is up:

1. the SMTP server is killed and started again 6 s later;
2. a worker is killed with SIGKILL while it sends the backlog that built up meanwhile;
3. the database is restarted (`pg_ctl -m immediate`: its processes are killed);
4. the other worker is killed with SIGKILL, whatever it is doing.

Then the load stops, the workers drain the outbox, the services stop, and checks.py judges
the database and the sink's record. A worker killed by the suite is started again by it; a
service that ends by itself is restarted by the Supervisor and reported.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases import accounts
from lifecycle.config import Settings, load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.mail import delivery
from lifecycle.schedule import intake
from lifecycle.store import db
from lifecycle.store.models import AuditEvent, OutboxMessage, Timer
from tests.reliability import checks
from tests.reliability.harness import (
    MENTORLUS,
    PROJECT_ROOT,
    Exit,
    PgCluster,
    Service,
    Sink,
    Supervisor,
    logs_on_failure,
    postgres_bin,
    wait_until,
)
from tests.reliability.load import Mentor, Stats, Traffic, local

SECRET = "reliability-suite-signing-key-0123456789abcdef"
COORDINATOR = ("koordinaator@esta.example", "reliability-parool-2026")
COMMITTEE = ["helle.hein@esta.example", "toomas.tuul@esta.example", "sirje.saar@esta.example"]
TOPICS = ["career", "self_care_system", "management_quality", "change_at_work"]
SMTP_CONNECTIONS = 4


# Timers due within the run: minutes instead of days (the shortest a duration can be). A
# short run lets the steps they take come due with the reminders; a soak leaves a minute
# between the reminder and the step, for late answers to race the timer.
def timers(*, step_after: str) -> dict[str, str]:
    return {
        "mentoring.requested.remind_mentor": "1m",
        "mentoring.requested.expire": step_after,
        "mentoring.first_meeting.meeting_date_missing": "1m",
        "mentor_application.submitted.review_overdue": "1m",
        "mentor_application.awaiting_info.info_reminder": "1m",
        "mentor_application.awaiting_info.withdraw": step_after,
    }


class Unavailable(Exception):
    """Something the run needs is not installed or not permitted here."""


@dataclass
class Fault:
    name: str
    at: float  # seconds into the load
    seconds: float  # how long the part was away
    in_flight: int | None = None  # messages sent but not yet marked sent when it struck

    def __str__(self) -> str:
        flight = f", {self.in_flight} in flight" if self.in_flight is not None else ""
        return f"{self.name} at {self.at:.0f} s ({self.seconds:.1f} s away{flight})"


@dataclass
class Run:
    """What a run did and what the checks found: `problems` empty means it held."""

    title: str
    load_seconds: float = 0.0
    stats: Stats = field(default_factory=Stats)
    faults: list[Fault] = field(default_factory=list)
    exits: list[Exit] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    findings: dict[str, Any] = field(default_factory=dict)  # behaviour the lead should see

    def summary(self) -> str:
        lines = [f"== {self.title}"]
        if self.load_seconds:
            calls, outcomes = self.stats.calls, self.stats.outcomes
            by_kind: dict[str, Counter[str]] = {}
            for (kind, status), count in outcomes.items():
                by_kind.setdefault(kind, Counter())[status] += count
            lines.append(
                f"load held: {calls} HTTP calls in {self.load_seconds:.0f} s "
                f"({calls / self.load_seconds:.1f}/s)"
            )
            for kind, counts in sorted(by_kind.items()):
                spread = self.stats.latencies.get(kind, [0.0])
                median = statistics.median(spread) * 1000
                p95 = sorted(spread)[int(len(spread) * 0.95)] * 1000
                answers = ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
                lines.append(f"  {kind}: {answers} (median {median:.0f} ms, p95 {p95:.0f} ms)")
        for key, value in self.figures.items():
            lines.append(f"{key}: {value}")
        if self.faults:
            lines.append(f"faults survived ({len(self.faults)}):")
            lines.extend(f"  {fault}" for fault in self.faults)
        for exit_ in self.exits:
            lines.append(f"exited by itself: {exit_.service} (code {exit_.code}): {exit_.reason}")
        for key, value in self.findings.items():
            lines.append(f"finding, {key}: {value}")
        lines.append(f"checks: {'all hold' if not self.problems else 'FAILED'}")
        lines.extend(f"  PROBLEM {problem}" for problem in self.problems)
        return "\n".join(lines)


# -- setting up --------------------------------------------------------------------------------


def environment(database_url: str, sink: Sink, *, timers: dict[str, str]) -> dict[str, str]:
    """What every process of the deployment gets: the same database, sink, key and config."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MENTORLUS_")}
    env.update(
        MENTORLUS_DATABASE__URL=database_url,
        MENTORLUS_SMTP__PORT=str(sink.port),
        MENTORLUS_SMTP__CONNECTIONS=str(SMTP_CONNECTIONS),
        MENTORLUS_SMTP__TIMEOUT_SECONDS="3",
        # A killed worker's claims come back after 10 s; the lease must outlast two timeouts.
        MENTORLUS_DELIVERY__LEASE_SECONDS="10",
        MENTORLUS_DELIVERY__POLL_SECONDS="0.5",
        # Back on the sink within seconds after it returns; never given up in a run.
        MENTORLUS_DELIVERY__BACKOFF_BASE_SECONDS="1",
        MENTORLUS_DELIVERY__BACKOFF_MAX_SECONDS="4",
        MENTORLUS_DELIVERY__MAX_ATTEMPTS="1000",
        MENTORLUS_SECRET_KEY=SECRET,
        MENTORLUS_LOGGING__FORMAT="json",
    )
    for key, duration in timers.items():
        env["MENTORLUS_TIMERS__" + key.upper().replace(".", "__")] = duration
    return env


def populate(settings: Settings, *, mentors: int) -> list[Mentor]:
    """Staff, an open intake round and listed mentors, through the real steps, days ago."""
    now = datetime.now(UTC)
    start = now - timedelta(days=20)
    clock = ManualClock(start)
    app = bootstrap.build(settings, clock=clock)
    email, password = COORDINATOR
    with app.unit() as tx:
        accounts.add_user(
            tx, name="Kaia Koordinaator", email=email, role="coordinator", password=password
        )
        intake.create_round(
            tx,
            name="Lisavoor",
            opens=local(now - timedelta(days=30)),
            closes=local(now + timedelta(days=30)),
        )
    for number, member in enumerate(COMMITTEE, 1):
        scenarios.add_staff(app, name=f"Komisjoniliige {number}", email=member, role="committee")
    listed = []
    for number in range(mentors):
        mentor = f"mentor-{number}@example.org"
        topics = [TOPICS[number % len(TOPICS)], TOPICS[(number + 1) % len(TOPICS)]]
        organisation = f"Organisatsioon {number}"
        data = scenarios.applicant(
            mentor,
            f"Mentor Õunapuu {number}",
            organisation=organisation,
            topics=topics,
            capacity=50,
        )
        clock.now = start
        ref = scenarios.submit_application(app, data, actor=email)
        scenarios.bring_application(
            app,
            clock,
            ref,
            "listed",
            coordinator=email,
            committee=COMMITTEE,
            applicant_email=mentor,
        )
        listed.append(Mentor(mentor, organisation, tuple(topics)))
    app.engine.dispose()
    return listed


def settled(app: App) -> bool:
    """Nothing waits to be sent or is being sent."""
    with app.sessions() as session:
        waiting = session.scalar(
            select(func.count())
            .select_from(OutboxMessage)
            .where(OutboxMessage.status.in_(("pending", "sending")))
        )
    return waiting == 0


def fired_by_now(app: App, due: datetime) -> bool:
    """No timer that was due at `due` is still pending."""
    with app.sessions() as session:
        waiting = session.scalar(
            select(func.count())
            .select_from(Timer)
            .where(Timer.status == "pending", Timer.due_at <= due)
        )
    return waiting == 0


def stop_settled(supervisor: Supervisor, app: App, env: dict[str, str], directory: Path) -> None:
    """Stop the services and leave nothing to send.

    A worker's timer job can run between the outbox's drain and the stop, and a worker lets
    a running job finish on SIGTERM: the mail of the timers it fired then waits in the
    outbox for the next start, as it would in production. `worker --once` is that start.
    """
    supervisor.stop()
    log = directory / "worker-once.log"
    for _ in range(3):  # what is left after these the checks report as pending
        if settled(app):
            return
        with logs_on_failure("worker --once after the stop", log), log.open("ab") as output:
            subprocess.run(
                [str(MENTORLUS), "worker", "--once"],
                env=env,
                cwd=PROJECT_ROOT,
                stdout=output,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )


def unmarked_at_sink(app: App, sink: Sink, struck_at: float) -> int:
    """Messages in flight at a fault: at the sink by then, but their rows still 'sending'.

    Measured 2 s later. A dead worker's rows stay so until their lease ends, and the next
    worker sends them again; a live worker's rows counted here (it may still be marking
    its batch) make the figure, and so the bound, a little larger than the real window.
    """
    arrived = {message["message_id"] for message in sink.received() if message["at"] <= struck_at}
    with app.sessions() as session:
        sending = set(
            session.scalars(
                select(OutboxMessage.message_id).where(OutboxMessage.status == "sending")
            )
        )
    return len(arrived & sending)


# -- the run -----------------------------------------------------------------------------------


class Faults:
    """The cycle of faults, run in the calling thread until the time is up."""

    def __init__(
        self,
        *,
        app: App,
        pg: PgCluster,
        sink: Sink,
        workers: list[Service],
        supervisor: Supervisor,
        started: float,
        until: float,
    ) -> None:
        self.app, self.pg, self.sink = app, pg, sink
        self.workers, self.supervisor = workers, supervisor
        self.started, self.until = started, until
        self.done: list[Fault] = []
        self.database_away: list[tuple[float, float]] = []  # the database restarts, wall time

    def run(self) -> None:
        cycle: list[Callable[[], None]] = [
            lambda: self._pause(5),
            self._smtp_down,
            lambda: self._kill_worker(self.workers[0], while_flushing=True),
            lambda: self._pause(7),
            self._restart_database,
            lambda: self._pause(7),
            lambda: self._kill_worker(self.workers[1], while_flushing=False),
            lambda: self._pause(7),
        ]
        while time.time() < self.until:
            for step in cycle:
                if time.time() >= self.until:
                    return
                step()
            self.workers.reverse()  # the next round kills them the other way round

    def _pause(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.until - time.time())))

    def _at(self, moment: float) -> float:
        return moment - self.started

    def _smtp_down(self) -> None:
        struck = time.time()
        self.sink.kill()
        time.sleep(6)
        self.sink.start()
        self.done.append(Fault("SMTP server killed", self._at(struck), time.time() - struck))

    def _kill_worker(self, worker: Service, *, while_flushing: bool) -> None:
        if while_flushing:  # strike while the backlog of the SMTP outage is being sent
            before = len(self.sink.received())
            deadline = time.time() + 10
            while len(self.sink.received()) < before + 10 and time.time() < deadline:
                time.sleep(0.05)
        struck = time.time()
        worker.kill()
        # What it had on the wire reaches the sink's record a moment later; meanwhile the
        # live worker marks what it sent.
        recorded = time.time() + 1
        time.sleep(2)
        in_flight = unmarked_at_sink(self.app, self.sink, recorded)
        self.supervisor.restart(worker)
        name = f"{worker.name} SIGKILL" + (" (sending a backlog)" if while_flushing else "")
        self.done.append(Fault(name, self._at(struck), time.time() - struck, in_flight))

    def _restart_database(self) -> None:
        struck = time.time()
        self.pg.stop("immediate")
        time.sleep(2)
        self.pg.start()
        back = time.time()
        self.database_away.append((struck, back))
        time.sleep(2)
        in_flight = unmarked_at_sink(self.app, self.sink, back)
        fault = Fault("database restarted (immediate)", self._at(struck), back - struck, in_flight)
        self.done.append(fault)


def run_postgres(
    directory: Path, *, seconds: float, step_after: str = "1m", mentees: int = 3
) -> Run:
    binaries = postgres_bin()
    if binaries is None:
        raise Unavailable("no PostgreSQL server binaries under /usr/lib/postgresql")
    run = Run(f"PostgreSQL: 2 web processes, 2 workers, {seconds:.0f} s of load")
    pg = PgCluster(binaries)
    sink = Sink(directory)
    supervisor: Supervisor | None = None
    try:
        pg.start()
        admin = create_engine(pg.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE mentorlus"))
        admin.dispose()
        engine = db.make_engine(pg.url("mentorlus"))
        db.migrate(engine)
        engine.dispose()
        sink.start()
        env = environment(pg.url("mentorlus"), sink, timers=timers(step_after=step_after))
        settings = load_settings(environ=env)
        # Accepted requests hold a mentor's place (capacity 50) for the rest of the run.
        mentors = populate(settings, mentors=max(24, int(seconds) // 10))
        app = bootstrap.build(settings)
        webs = [Service.web(f"web-{n}", env, directory / f"web-{n}.log") for n in (1, 2)]
        workers = [
            Service(f"worker-{n}", ["worker"], env, directory / f"worker-{n}.log") for n in (1, 2)
        ]
        supervisor = Supervisor([*webs, *workers])
        supervisor.start()
        traffic = Traffic(
            webs=[web.url("") for web in webs],
            mentors=mentors,
            coordinator=COORDINATOR,
            committee=COMMITTEE,
            sink=sink,
            stats=run.stats,
            seed=2026,
            timeout=20,
            mentees=mentees,
        )
        started = time.time()
        traffic.start()
        faults = Faults(
            app=app,
            pg=pg,
            sink=sink,
            workers=list(workers),
            supervisor=supervisor,
            started=started,
            until=started + seconds,
        )
        try:
            faults.run()
        finally:
            traffic.stop()
        run.load_seconds = time.time() - started
        run.faults = faults.done
        # Timers come due a minute after their state began: a worker's timer job (every 30 s)
        # fires those of the first minute's requests meanwhile. Then the outbox drains.
        time.sleep(max(0.0, started + run.load_seconds + 30 - time.time()))
        # The job's 30 s count from each worker's (re)start, and on a loaded machine a killed
        # worker starts again late: what is due now may wait for its next tick. (If it never
        # fires, the checks say so.)
        due = datetime.now(UTC)
        with suppress(AssertionError):
            wait_until(lambda: fired_by_now(app, due), timeout=90, what="the due timers to fire")
        wait_until(lambda: settled(app), timeout=180, what="the outbox to drain")
        checked_at = datetime.now(UTC)
        stop_settled(supervisor, app, env, directory)
        run.exits = supervisor.exits
        _judge(run, app, sink, started, checked_at, faults.database_away)
        app.engine.dispose()
    finally:
        if supervisor is not None:
            supervisor.stop()
        sink.stop()
        pg.destroy()
    return run


def _judge(
    run: Run,
    app: App,
    sink: Sink,
    started: float,
    checked_at: datetime,
    database_away: list[tuple[float, float]],
) -> None:
    in_flight = sum(fault.in_flight or 0 for fault in run.faults)
    sink_kills = sum(1 for fault in run.faults if fault.name.startswith("SMTP"))
    # A server killed between recording a message and its 250 gets that message again: at
    # most one per open connection.
    allowed = in_flight + sink_kills * 2 * SMTP_CONNECTIONS
    verdict = checks.verify(
        app,
        received=sink.received(),
        acks=run.stats.acks,
        allowed_duplicates=allowed,
        checked_at=checked_at,
    )
    run.problems.extend(verdict.problems)
    # delivery.py: a worker marks what it sent MARK_EVERY at a time, so at most MARK_EVERY - 1
    # sent messages wait for a mark, plus one on each connection the server has answered.
    per_worker = delivery.MARK_EVERY - 1 + SMTP_CONNECTIONS
    for fault in run.faults:
        if (fault.in_flight or 0) > 2 * per_worker:
            run.problems.append(f"{fault}: more in flight than 2 workers x {per_worker}")

    def while_database_away(moment: float, grace: float) -> bool:
        return any(down <= moment <= up + grace for down, up in database_away)

    for moment, kind, detail in run.stats.failures:
        if not while_database_away(moment, grace=5):
            run.problems.append(f"{kind} failed at {moment - started:.1f} s: {detail}")
    for exit_ in run.exits:
        if not (exit_.service.startswith("worker") and while_database_away(exit_.at, grace=10)):
            run.problems.append(f"{exit_.service} exited by itself: {exit_.reason}")
    run.findings["worker exits while the database was away"] = sum(
        1 for exit_ in run.exits if exit_.service.startswith("worker")
    )
    since = datetime.fromtimestamp(started, UTC)
    with app.sessions() as session:
        steps = Counter(
            {
                trigger: count
                for trigger, count in session.execute(
                    select(AuditEvent.trigger, func.count())
                    .where(AuditEvent.at >= since)
                    .group_by(AuditEvent.trigger)
                )
            }
        )
        fired = dict(
            session.execute(
                select(Timer.name, func.count())
                .where(Timer.finished_at >= since, Timer.status == "fired")
                .group_by(Timer.name)
            ).all()
        )
    arrived = verdict.figures["arrived"]
    run.figures.update(
        transitions=f"{sum(steps.values())} steps in the run ({dict(steps.most_common())})",
        mail=(
            f"{arrived} copies arrived, {verdict.figures['outbox']} in the outbox, "
            f"{verdict.figures['duplicates']} duplicate copies (bound {allowed}: "
            f"{in_flight} in flight at the faults + {sink_kills} SMTP kills x 2 workers x "
            f"{SMTP_CONNECTIONS} connections), "
            f"{verdict.figures['duplicate_timer_emails']} of them timer emails"
        ),
        timers=f"fired in the run: {fired}; left pending: {verdict.figures['timers_pending']}",
        checked=(
            f"{verdict.figures['cases']} cases replayed from {verdict.figures['events']} audit "
            f"events; {verdict.figures['confirmed_steps']} confirmed steps found"
        ),
        states=verdict.figures["states"],
    )
