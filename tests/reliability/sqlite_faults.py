"""The SQLite faults: the database file locked by another process, and the disk full.

A SQLite deployment (one web process, one worker, the sink) keeps its database on a small
tmpfs of its own, so the disk can really fill up (ENOSPC, as on a full server).

- **Locked**: another process holds `BEGIN EXCLUSIVE`. Held for 5 s, shorter than the
  engine's busy timeout (30 s, lifecycle/db.py), every caller waits and then succeeds. Held
  until the web request and the CLI calls have given up (30 s after each first waited),
  the web, the CLI and the worker fail; nothing they were doing may be half-made, and once
  the lock is gone the same actions succeed.
- **Disk full**: with mail waiting for a stopped worker, the WAL is truncated and a filler
  file takes the rest of the disk. A request, the CLI and the worker fail; nothing is
  half-made; once the filler is deleted everything proceeds and the mail is sent once.

What each part answered while the fault lasted is kept in `Run.findings`.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.store import db
from lifecycle.store.models import Case, Person
from tests.reliability import checks
from tests.reliability.harness import (
    MENTORLUS,
    PROJECT_ROOT,
    Service,
    Sink,
    Supervisor,
    last_error,
    wait_until,
)
from tests.reliability.load import Mentor
from tests.reliability.scenario import (
    COORDINATOR,
    Fault,
    Run,
    Unavailable,
    environment,
    populate,
    settled,
    stop_settled,
    unmarked_at_sink,
)

BUSY_SECONDS = 30  # lifecycle/db.py: the SQLite timeout and busy_timeout
# How long a caller may take to answer: the busy timeout, after a CLI process has started —
# which on a loaded machine can take a minute.
CALLER_TIMEOUT = BUSY_SECONDS * 6
SUCCESS = (0, 202)  # an exit code, an HTTP status (a request held for its confirmation)
DISK = "size=64m"


@dataclass
class Answer:
    """What one caller got: an HTTP status or an exit code, the text, and how long it took."""

    code: int
    text: str
    seconds: float
    lines: int = 1  # of the CLI's standard error

    def as_dict(self) -> dict[str, Any]:
        seconds = round(self.seconds, 1)
        return {"code": self.code, "text": self.text, "seconds": seconds, "lines": self.lines}


class Deployment:
    """The callers of the SQLite deployment: a mentee over HTTP, an operator with the CLI."""

    def __init__(
        self, app: App, web: Service, env: dict[str, str], directory: Path, mentor: Mentor
    ) -> None:
        self.app, self.web, self.env = app, web, env
        self.directory, self.mentor = directory, mentor

    def _mentee(self, name: str) -> dict[str, Any]:
        return scenarios.mentee(
            f"{name}@example.org",
            f"Juhendatav {name}",
            self.mentor.email,
            topic=self.mentor.topics[0],
        )

    @cached_property
    def _mentor_id(self) -> int:
        """Read once, before any fault: a new connection cannot even open a locked database."""
        with self.app.sessions() as session:
            found = session.scalar(select(Person.id).where(Person.email == self.mentor.email))
        assert found is not None
        return found

    def _api_mentee(self, name: str) -> dict[str, Any]:
        """The same request as the public API takes it: the mentor by their directory id."""
        data = self._mentee(name)
        del data["mentor"]
        return {**data, "mentor_id": self._mentor_id}

    def ask(self, name: str) -> Answer:
        """A mentee's request over the API."""
        started = time.monotonic()
        try:
            response = httpx.post(
                self.web.url("/api/v1/requests"),
                json=self._api_mentee(name),
                timeout=CALLER_TIMEOUT,
            )
        except httpx.HTTPError as error:
            return Answer(0, f"{type(error).__name__}: {error}", time.monotonic() - started)
        return Answer(response.status_code, response.text[:300], time.monotonic() - started)

    def cli(self, *args: str) -> Answer:
        started = time.monotonic()
        done = subprocess.run(
            [str(MENTORLUS), *args],
            env=self.env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=CALLER_TIMEOUT,
        )
        lines = done.stderr.strip().splitlines()
        text = last_error(lines)[:300]  # the one line, or the line that ends a traceback
        return Answer(done.returncode, text, time.monotonic() - started, len(lines))

    def cli_request(self, name: str) -> Answer:
        path = self.directory / f"{name}.json"
        path.write_text(json.dumps(self._mentee(name), ensure_ascii=False), encoding="utf-8")
        return self.cli("request", "submit", "--file", str(path))

    def trace_of(self, *names: str) -> list[str]:
        """The people of these mentees, if anything of them was written."""
        emails = [f"{name}@example.org" for name in names]
        with self.app.sessions() as session:
            return list(session.scalars(select(Person.email).where(Person.email.in_(emails))))

    def case(self, ref: str) -> tuple[str, int]:
        with self.app.sessions() as session:
            case = session.get(Case, int(ref.split("-")[1]))
            assert case is not None
            return case.state, case.version


def in_background(work: Any) -> tuple[threading.Thread, list[Answer | BaseException]]:
    """Run a call in a thread; its answer (or what it raised) lands in the list."""
    answers: list[Answer | BaseException] = []

    def call() -> None:
        try:
            answers.append(work())
        except BaseException as error:  # raised again by _all_at_once, in the caller's thread
            answers.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    return thread, answers


def hold_lock(path: Path, seconds: float | None) -> subprocess.Popen[str]:
    """Another process takes the database's write lock and keeps it for `seconds`, or with
    None until `release(locker)`."""
    wait = f"time.sleep({seconds})" if seconds is not None else "sys.stdin.readline()"
    code = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        f"{wait}\n"
        "c.execute('ROLLBACK')\n"
    )
    locker = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    return locker


def release(locker: subprocess.Popen[str]) -> None:
    """The locker of hold_lock(path, None) ends its transaction, and exits."""
    assert locker.stdin is not None
    locker.stdin.close()  # its readline() returns
    locker.wait(timeout=30)


def truncate_wal(path: Path) -> None:
    """Checkpoint everything into the database file and cut the WAL to nothing: its next
    write then needs new space on the disk."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        deadline = time.monotonic() + 30
        while connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "the WAL could not be truncated"
            time.sleep(0.2)
    finally:
        connection.close()


def fill(disk: Path) -> Path:
    """Write a file until the disk is full, to the last page."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for block in (1 << 20, 4096):
            with suppress(OSError):
                while os.write(descriptor, b"\0" * block):
                    pass
    finally:
        os.close(descriptor)
    probe = disk / "probe"
    try:
        probe.write_bytes(b"\0" * 4096)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    else:
        raise AssertionError("the disk did not fill up")
    finally:
        probe.unlink(missing_ok=True)
    return filler


def run_sqlite(directory: Path) -> Run:
    if os.geteuid() != 0:
        raise Unavailable("mounting a small tmpfs (for the full disk) needs root")
    run = Run("SQLite: the database locked by another process, then the disk full")
    disk = directory / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", DISK, "tmpfs", str(disk)], check=True)
    sink = Sink(directory)
    supervisor: Supervisor | None = None
    try:
        path = disk / "mentorlus.db"
        url = f"sqlite:///{path}"
        engine = db.make_engine(url)
        db.migrate(engine)
        engine.dispose()
        sink.start()
        env = environment(url, sink, timers={})
        settings = load_settings(environ=env)
        mentor = populate(settings, mentors=1)[0]
        app = bootstrap.build(settings)
        web = Service.web("web", env, directory / "web.log")
        worker = Service("worker", ["worker"], env, directory / "worker.log")
        supervisor = Supervisor([web, worker])
        supervisor.start()
        started = time.time()
        deployment = Deployment(app, web, env, directory, mentor)
        _locked(run, deployment, path, sink, started)
        _full_disk(run, deployment, disk, path, worker, supervisor, sink, started)
        wait_until(lambda: settled(app), timeout=120, what="the outbox to drain")
        checked_at = datetime.now(UTC)
        stop_settled(supervisor, app, env, directory)
        run.exits = supervisor.exits
        allowed = sum(fault.in_flight or 0 for fault in run.faults)
        verdict = checks.verify(
            app,
            received=sink.received(),
            acks=[],
            allowed_duplicates=allowed,
            checked_at=checked_at,
        )
        run.problems.extend(verdict.problems)
        for exit_ in run.exits:
            if exit_.service != "worker":
                run.problems.append(f"{exit_.service} exited by itself: {exit_.reason}")
        run.figures.update(
            mail=f"{verdict.figures['arrived']} copies arrived, {verdict.figures['outbox']} "
            f"in the outbox, {verdict.figures['duplicates']} duplicate copies (bound {allowed})",
            checked=f"{verdict.figures['cases']} cases replayed from "
            f"{verdict.figures['events']} audit events",
        )
        app.engine.dispose()
    finally:
        if supervisor is not None:
            supervisor.stop()
        sink.stop()
        subprocess.run(["umount", "--lazy", str(disk)], check=False)
    return run


def _locked(run: Run, deployment: Deployment, path: Path, sink: Sink, started: float) -> None:
    # A request the CLI will cancel, made by the service: a web request makes no case before
    # its address confirms it.
    ref = scenarios.submit_request(deployment.app, deployment._api_mentee("ootaja"))
    before = deployment.case(ref)

    # Shorter than the busy timeout: everybody waits, then goes on.
    calls = {
        "web request": lambda: deployment.ask("lyhike"),
        "CLI request": lambda: deployment.cli_request("lyhike-cli"),
    }
    struck = time.time()
    locker = hold_lock(path, 5)
    answers = _all_at_once(calls)
    locker.wait()
    run.faults.append(Fault("database locked 5 s (BEGIN EXCLUSIVE)", struck - started, 5))
    for name, answer in answers.items():
        run.findings[f"locked 5 s: {name}"] = answer.as_dict()
        if answer.code not in SUCCESS:
            run.problems.append(f"a 5 s lock was not waited out: {name} {answer}")

    # Until every caller has given up: each waits the busy timeout from its first write, and
    # a CLI process can take many seconds to start on a loaded machine (a lock of a fixed
    # length could end before a late caller's timeout and let it through).
    calls = {
        "web request": lambda: deployment.ask("pikk"),
        "CLI request": lambda: deployment.cli_request("pikk-cli"),
        "CLI cancel": lambda: deployment.cli(
            "case", "advance", ref, "cancel", "--actor", COORDINATOR[0]
        ),
    }
    struck = time.time()
    locker = hold_lock(path, None)
    try:
        answers = _all_at_once(calls)
    finally:
        release(locker)
    released = time.time()
    held = round(released - struck)
    time.sleep(2)
    in_flight = unmarked_at_sink(deployment.app, sink, released)
    run.faults.append(
        Fault(f"database locked {held} s (BEGIN EXCLUSIVE)", struck - started, held, in_flight)
    )
    for name, answer in answers.items():
        run.findings[f"locked past the busy timeout: {name}"] = answer.as_dict()
    _nothing_made(run, deployment, answers, {"web request": "pikk", "CLI request": "pikk-cli"})
    if answers["CLI cancel"].code not in SUCCESS and deployment.case(ref) != before:
        run.problems.append(f"a failed cancel under the lock still moved {ref}")
    _then_proceed(run, "the lock", calls, answers)


def _full_disk(
    run: Run,
    deployment: Deployment,
    disk: Path,
    path: Path,
    worker: Service,
    supervisor: Supervisor,
    sink: Sink,
    started: float,
) -> None:
    wait_until(lambda: settled(deployment.app), timeout=120, what="the outbox to drain")
    worker.stop()
    waiting = deployment.ask("enne-taist")  # its emails wait in the outbox
    if waiting.code != 202:
        run.problems.append(f"a request before the disk filled failed: {waiting}")
    truncate_wal(path)
    filler = fill(disk)
    calls = {
        "web request": lambda: deployment.ask("taies"),
        "CLI request": lambda: deployment.cli_request("taies-cli"),
    }
    struck = time.time()
    answers = _all_at_once(calls)
    supervisor.restart(worker)  # it finds mail to send and nowhere to write
    time.sleep(3)
    for name, answer in answers.items():
        run.findings[f"disk full: {name}"] = answer.as_dict()
    _nothing_made(run, deployment, answers, {"web request": "taies", "CLI request": "taies-cli"})
    filler.unlink()
    freed = time.time()
    time.sleep(2)
    in_flight = unmarked_at_sink(deployment.app, sink, freed)
    run.faults.append(Fault("disk full (tmpfs)", struck - started, freed - struck, in_flight))
    _then_proceed(run, "space returned", calls, answers)


def _all_at_once(calls: dict[str, Callable[[], Answer]]) -> dict[str, Answer]:
    running = {name: in_background(call) for name, call in calls.items()}
    for thread, _ in running.values():
        thread.join()
    done: dict[str, Answer] = {}
    for name, (_, answers) in running.items():
        answer = answers[0]
        if isinstance(answer, BaseException):
            raise AssertionError(f"{name}: {type(answer).__name__}: {answer}") from answer
        done[name] = answer
    return done


def _then_proceed(
    run: Run, after: str, calls: dict[str, Callable[[], Answer]], answers: dict[str, Answer]
) -> None:
    """Each call that failed during the fault succeeds when made again after it."""
    for name, answer in answers.items():
        if answer.code not in SUCCESS:
            again = calls[name]()
            if again.code not in SUCCESS:
                run.problems.append(f"after {after}, {name} still fails: {again}")


def _nothing_made(
    run: Run, deployment: Deployment, answers: dict[str, Answer], mentees: dict[str, str]
) -> None:
    """A request that failed left no trace: not even the mentee it would have added."""
    for call, mentee in mentees.items():
        if answers[call].code not in SUCCESS and deployment.trace_of(mentee):
            run.problems.append(f"the failed {call} ({answers[call]}) left {mentee} behind")
