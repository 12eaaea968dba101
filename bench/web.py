"""Benchmark the web app: a filtered directory search and the work queue, against a trivial page.

On a fresh migrated SQLite file in a temporary directory it bulk-inserts (straight rows, not
the service path: that would take hours for this many) a programme of `--mentors` listed
mentors (default 5,000), each a person, a mentor profile with varied topics, regions,
languages, formats and capacity, a credential, and an application whose case is `listed`
(some with an older withdrawn or rejected application, some paused or retired instead), and
`--relations` mentoring relations (default 100,000: cases, relations, the audit events that
entered their states and the timers those states started) across every state, with the
occupied places of each mentor within their capacity. Applications wait in `submitted`,
`eligibility`, `awaiting_info` and `interview`, many with a fired `review_overdue` or
`decision_overdue` timer, so the coordinators' work queue has a few hundred cases. The
cases are written in the order they opened, over four years, so ids grow with time as in a
real database. Nothing runs ANALYZE: the product never does either.

It then starts the real server, `mentorlus serve`, in a subprocess on that file (rather
than the app in-process with a TestClient: the client's own work then does not share the
server's process and CPU time, and requests go through uvicorn and a real socket), and
measures over HTTP with httpx (one keep-alive connection, one request after another, the
four kinds taking turns so that all see the same machine load) the median latency of:

- `trivial`: GET /static/style.css, a file served by the same app (same middleware);
- `directory_page`: GET /?topic=career&region=<r>&free=on, the public directory filtered,
  <r> going round the regions;
- `directory_api`: GET /api/v1/mentors?topic=<t>&region=<r>&free=true, <t> and <r> going
  round the topics and regions;
- `queue`: GET /console, the coordinators' work queue, logged in as a coordinator created
  with lifecycle.cases.accounts.add_user.

`directory_ms` is the slower of the two directory medians. Every result is a `key=value`
line on stdout; the last two are `directory_vs_trivial=<ratio>` and `queue_vs_trivial=<ratio>`
(target for each: at most 5). Progress goes to stderr. `--dir` keeps the database in a
folder and measures it again on the next run. docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

# Python puts the script's folder first on sys.path, and bench/transitions.py would then
# shadow the `transitions` library that the workflows load.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)  # for bench.common, tests.processes

# The imports below come after the sys.path fix above (ruff allows it).
import httpx
from sqlalchemy import insert

from bench.common import log
from lifecycle import bootstrap
from lifecycle.cases import accounts, queries
from lifecycle.config import load_settings
from lifecycle.store import db
from lifecycle.store.models import (
    APPLICATION,
    MENTORING,
    TOPICS,
    Application,
    AuditEvent,
    Case,
    Credential,
    MentorProfile,
    Person,
    Relation,
    Timer,
)
from tests.processes import free_port

COORDINATOR = "koordinaator@bench.example"
PASSWORD = "pikk-ja-turvaline-parool"
# Counties, the most populous first; a mentor works in one to three of them.
REGIONS = [
    ("Harjumaa", 30),
    ("Tartumaa", 14),
    ("Ida-Virumaa", 9),
    ("Pärnumaa", 8),
    ("Lääne-Virumaa", 6),
    ("Viljandimaa", 5),
    ("Raplamaa", 4),
    ("Võrumaa", 4),
    ("Saaremaa", 4),
    ("Jõgevamaa", 3),
    ("Järvamaa", 3),
    ("Valgamaa", 3),
    ("Põlvamaa", 3),
    ("Läänemaa", 2),
    ("Hiiumaa", 1),
]
FIRST = "Mari Kadri Liis Tiina Anne Kati Piret Reet Sirje Helle Jaan Tiit Peeter Toomas Andres Mart"
LAST = "Tamm Saar Sepp Mägi Kask Kukk Rebane Ilves Pärn Koppel Lepik Kuusk Karu Oja Mets Lill"
FIRST_NAMES, LAST_NAMES = FIRST.split(), LAST.split()
TOWNS = ["Tallinna", "Tartu", "Pärnu", "Narva", "Viljandi", "Rakvere", "Võru", "Valga", "Paide"]
KINDS = ["Linnavalitsus", "Sotsiaalkeskus", "Haigla", "Hooldekodu", "Perekeskus", "Vald"]
BACKGROUNDS = [
    "Lastekaitse ja perede nõustamine",
    "Eakate hoolekanne ja koduteenused",
    "Sõltuvusprobleemidega inimeste rehabilitatsioon",
    "Puuetega inimeste tugiteenused",
    "Kohaliku omavalitsuse sotsiaalosakonna juhtimine",
    "Haigla sotsiaaltöö ja kriisinõustamine",
    "Asenduskoduteenus ja noorte toetamine",
    "Child protection and family counselling",
    "Social work management in a municipality",
]
DEGREE_FIELDS = ["sotsiaaltöö", "sotsiaaltöö korraldus", "psühholoogia", "social work"]
# Cases in these states take one of the mentor's places (lifecycle/workflows/capacity.py).
OCCUPYING = ("first_meeting", "agreement", "active", "reframed")
ENTERED_BY = {
    "first_meeting": "accept",
    "agreement": "proceed",
    "active": "sign",
    "reframed": "reframe",
    "closed": "close",
    "declined": "decline",
    "expired": "expire",
}
# How long ago relations in each state were requested: open ones recently, ended ones over
# four years.
REQUESTED_DAYS_AGO = {
    "requested": (0.1, 9),
    "first_meeting": (2, 45),
    "agreement": (10, 90),
    "active": (20, 365),
    "reframed": (60, 365),
    "closed": (30, 1400),
    "declined": (10, 1400),
    "expired": (11, 1400),
}
OUTCOMES = ["completed", "completed", "completed", "not_continued", "ended_early", "cancelled"]


# -- the data -----------------------------------------------------------------------------------


@dataclass
class Rows:
    """Rows for each table, with the next id of each; inserted in foreign-key order."""

    now: datetime
    rng: random.Random
    tables: dict[type[Any], list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, model: type[Any], **row: Any) -> int:
        rows = self.tables.setdefault(model, [])
        row.setdefault("id", len(rows) + 1)
        rows.append(row)
        return int(row["id"])

    def ago(self, low_days: float, high_days: float) -> datetime:
        return self.now - timedelta(days=self.rng.uniform(low_days, high_days))

    def case(self, workflow: str, states: list[tuple[str, str, datetime]]) -> int:
        """A case that went through (trigger, state, at) steps; one audit event per step."""
        case_id = self.add(
            Case,
            workflow=workflow,
            state=states[-1][1],
            version=len(states),
            opened_at=states[0][2],
            updated_at=states[-1][2],
            state_entered_at=states[-1][2],
        )
        from_state = None
        for trigger, state, at in states:
            event_id = self.add(
                AuditEvent,
                case_id=case_id,
                at=at,
                actor_id=None,
                actor_role="system",
                trigger=trigger,
                from_state=from_state,
                to_state=state,
                comment="",
            )
            from_state = state
        self.tables[Case][-1]["entry_event_id"] = event_id
        return case_id

    def timer(self, case_id: int, state: str, name: str, due_at: datetime, status: str) -> None:
        events = self.tables[AuditEvent]
        # The event that entered `state` most recently: the timer hangs off it.
        entry = next(
            e for e in reversed(events) if e["case_id"] == case_id and e["to_state"] == state
        )
        self.add(
            Timer,
            case_id=case_id,
            entry_event_id=entry["id"],
            state=state,
            name=name,
            due_at=due_at,
            status=status,
            finished_at=due_at if status != "pending" else None,
            note="",
        )


def weighted_regions(rng: random.Random) -> list[str]:
    names = [name for name, _ in REGIONS]
    weights = [weight for _, weight in REGIONS]
    chosen: list[str] = []
    while len(chosen) < rng.choice((1, 1, 1, 2, 2, 3)):
        region = rng.choices(names, weights)[0]
        if region not in chosen:
            chosen.append(region)
    return chosen


def person(rows: Rows, index: int, kind: str) -> int:
    rng = rows.rng
    return rows.add(
        Person,
        name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)} {index}",
        email=f"{kind}{index}@bench.example",
        language=rng.choice(("et", "et", "et", "en")),
        organisation=f"{rng.choice(TOWNS)} {rng.choice(KINDS)}",
        region=weighted_regions(rng)[0],
        role=None,
        created_at=rows.ago(400, 1500),
        notify_rounds=False,
        bulk_opt_out_at=None,
        password_hash=None,
    )


def profile(rows: Rows, person_id: int) -> dict[str, Any]:
    rng = rows.rng
    level = rng.choices(("bachelor", "master", "doctorate"), (35, 55, 10))[0]
    values = {
        "person_id": person_id,
        "degree_level": level,
        "degree_field": rng.choice(DEGREE_FIELDS),
        "degree_in_social_work": rng.random() < 0.85,
        "years_in_social_field": rng.randint(5, 35),
        "topics": rng.sample(TOPICS, rng.randint(1, 4)),
        "background": f"{rng.choice(BACKGROUNDS)}, {rng.randint(5, 30)} aastat.",
        "regions": weighted_regions(rng),
        "languages": rng.choices((["et"], ["et", "en"], ["en"]), (60, 35, 5))[0],
        "formats": rng.choices((["in_person", "online"], ["in_person"], ["online"]), (6, 3, 2))[0],
        "capacity": rng.choices((1, 2, 3, 4, 5), (20, 35, 25, 12, 8))[0],
        "fee_note": rng.choice(("Tasu kokkuleppel.", "Tasuta.", "")),
    }
    profile_id = rows.add(MentorProfile, **values)
    rows.add(
        Credential,
        profile_id=profile_id,
        kind=rng.choice(("mentor", "coach", "supervisor")),
        issuer="Eesti Supervisiooni ja Coachingu Ühing",
        year=rng.randint(2005, 2024),
        valid_until=None,
    )
    return values


def application(rows: Rows, person_id: int, steps: list[tuple[str, str, datetime]]) -> int:
    case_id = rows.case(APPLICATION, steps)
    rows.add(
        Application,
        case_id=case_id,
        person_id=person_id,
        intake_round_id=None,
        submitted_at=steps[0][2],
        interview_at=None,
        interview_place=None,
        interview_sequence=0,
    )
    return case_id


# How an application reaches each state: the steps after `submit`.
APPLICATION_PATHS = {
    "submitted": [],
    "eligibility": ["begin_review"],
    "awaiting_info": ["begin_review", "request_info"],
    "interview": ["begin_review", "mark_eligible"],
    "listed": ["begin_review", "mark_eligible", "approve"],
    "paused": ["begin_review", "mark_eligible", "approve", "pause"],
    "retired": ["begin_review", "mark_eligible", "approve", "retire"],
    "rejected": ["begin_review", "mark_ineligible"],
    "withdrawn": ["withdraw"],
}
STATE_AFTER = {
    "begin_review": "eligibility",
    "request_info": "awaiting_info",
    "mark_eligible": "interview",
    "approve": "listed",
    "pause": "paused",
    "retire": "retired",
    "mark_ineligible": "rejected",
    "withdraw": "withdrawn",
}


def listing_steps(rows: Rows, at: datetime, state: str) -> list[tuple[str, str, datetime]]:
    """The steps of an application from submission to `state`, the last one at `at`."""
    steps = [("submit", "submitted")] + [(t, STATE_AFTER[t]) for t in APPLICATION_PATHS[state]]
    spacing = timedelta(days=rows.rng.uniform(2, 15))
    return [(t, s, at - spacing * (len(steps) - 1 - i)) for i, (t, s) in enumerate(steps)]


def build_programme(rows: Rows, *, mentors: int, relations: int) -> dict[str, int]:
    """Every row of the benchmark programme; how many of each kind.

    Each case is planned with the moment it opened, then the cases are written in that
    order, so that ids grow with time as in a real database.
    """
    rng = rows.rng
    stories: list[tuple[datetime, Callable[[], object]]] = []
    listed: list[tuple[int, dict[str, Any]]] = []
    mentor_ids = [person(rows, i, "mentor") for i in range(mentors)]
    for i in rng.sample(range(mentors), mentors // 10):  # an older application, not listed
        steps = listing_steps(rows, rows.ago(900, 1400), rng.choice(("withdrawn", "rejected")))
        stories.append((steps[0][2], partial(application, rows, mentor_ids[i], steps)))
    for person_id in mentor_ids:
        listed.append((person_id, profile(rows, person_id)))
        steps = listing_steps(rows, rows.ago(30, 800), "listed")
        stories.append((steps[0][2], partial(listed_application, rows, person_id, steps)))
    # Not in the directory: paused and retired mentors, and applications on their way.
    waiting = {
        "paused": max(2, mentors // 40),
        "retired": max(2, mentors // 50),
        "submitted": max(20, mentors // 30),
        "eligibility": max(10, mentors // 60),
        "awaiting_info": max(5, mentors // 100),
        "interview": max(10, mentors // 80),
        "rejected": max(5, mentors // 40),
        "withdrawn": max(5, mentors // 50),
    }
    index = mentors
    for state, count in waiting.items():
        for _ in range(count):
            person_id = person(rows, index, "applicant")
            index += 1
            profile(rows, person_id)
            recent = state in ("submitted", "eligibility", "awaiting_info", "interview")
            steps = listing_steps(rows, rows.ago(0.5, 25) if recent else rows.ago(30, 700), state)
            stories.append((steps[0][2], partial(waiting_application, rows, person_id, steps)))
    mentees = [person(rows, i, "mentee") for i in range(max(1, relations // 3))]
    states = relation_states(rows, listed, relations)
    for (mentor_id, values), state in states:
        requested_at = rows.ago(*REQUESTED_DAYS_AGO[state])
        story = partial(relation, rows, mentor_id, values, rng.choice(mentees), state, requested_at)
        stories.append((requested_at, story))
    stories.sort(key=lambda story: story[0])
    for _, tell in stories:
        tell()
    return {
        "listed": mentors,
        "relations": len(states),
        **{f"applications_{state}": count for state, count in waiting.items()},
    }


def listed_application(rows: Rows, person_id: int, steps: list[tuple[str, str, datetime]]) -> None:
    case_id = application(rows, person_id, steps)
    availability = steps[-1][2] + timedelta(days=365)
    rows.timer(case_id, "listed", "availability_check", availability, "pending")


def waiting_application(rows: Rows, person_id: int, steps: list[tuple[str, str, datetime]]) -> None:
    """An application on its way, with the timers of its state (some fired: overdue)."""
    case_id = application(rows, person_id, steps)
    state, at = steps[-1][1], steps[-1][2]
    if state == "submitted":
        due = at + timedelta(days=7)
        rows.timer(case_id, state, "review_overdue", due, _due(rows, due))
    if state == "interview":
        interview = at + timedelta(days=rows.rng.uniform(-10, 14))
        rows.tables[Application][-1]["interview_at"] = interview
        rows.tables[Application][-1]["interview_place"] = "Tallinn, Lai 1"
        reminder, decision = interview - timedelta(days=2), interview + timedelta(days=7)
        rows.timer(case_id, state, "interview_reminder", reminder, _due(rows, reminder))
        rows.timer(case_id, state, "decision_overdue", decision, _due(rows, decision))


def _due(rows: Rows, due: datetime) -> str:
    return "fired" if due <= rows.now else "pending"


def relation_states(
    rows: Rows, listed: list[tuple[int, dict[str, Any]]], total: int
) -> list[tuple[tuple[int, dict[str, Any]], str]]:
    """Which mentor each relation has and its state; occupied places stay within capacity."""
    rng = rows.rng
    chosen: list[tuple[tuple[int, dict[str, Any]], str]] = []
    for mentor in listed:
        capacity = mentor[1]["capacity"]
        taken = capacity if rng.random() < 0.35 else rng.randint(0, capacity)
        chosen += [(mentor, rng.choice(OCCUPYING)) for _ in range(taken)]
    rng.shuffle(chosen)
    chosen = chosen[: total // 5]  # at most a fifth of all relations are under way
    ended = rng.choices(
        ("requested", "closed", "declined", "expired"), (2, 70, 14, 14), k=total - len(chosen)
    )
    chosen += [(rng.choice(listed), state) for state in ended]
    return chosen


def relation(
    rows: Rows,
    mentor_id: int,
    values: dict[str, Any],
    mentee_id: int,
    state: str,
    requested_at: datetime,
) -> None:
    rng = rows.rng
    steps = [("request", "requested", requested_at)]
    if state != "requested":
        entered = min(requested_at + timedelta(days=rng.uniform(1, 9)), rows.now)
        steps.append((ENTERED_BY[state], state, entered))
    case_id = rows.case(MENTORING, steps)
    managers = values["degree_level"] in ("master", "doctorate") and values["degree_in_social_work"]
    rows.add(
        Relation,
        case_id=case_id,
        mentor_id=mentor_id,
        mentee_id=mentee_id,
        topic=rng.choice(values["topics"]),
        question="Kuidas toetada meeskonda muudatuste ajal?",
        mentee_is_manager=managers and rng.random() < 0.2,
        mentee_organisation=f"{rng.choice(TOWNS)} {rng.choice(KINDS)}",
        requested_at=requested_at,
        mentor_goes_on_at=None,
        mentee_goes_on_at=None,
        outcome=rng.choice(OUTCOMES) if state == "closed" else None,
    )
    remind, expire = requested_at + timedelta(days=3), requested_at + timedelta(days=10)
    if state == "requested":
        rows.timer(case_id, "requested", "remind_mentor", remind, _due(rows, remind))
        rows.timer(case_id, "requested", "expire", expire, "pending")
        return
    left = steps[-1][2]
    rows.timer(
        case_id, "requested", "remind_mentor", remind, "fired" if left > remind else "cancelled"
    )
    rows.timer(
        case_id, "requested", "expire", expire, "fired" if state == "expired" else "cancelled"
    )
    if state == "active":
        check_in = left + timedelta(days=30)
        while check_in <= rows.now:
            rows.timer(case_id, state, "check_in", check_in, "fired")
            check_in += timedelta(days=30)
        rows.timer(case_id, state, "check_in", check_in, "pending")
    elif state in ("agreement", "reframed"):
        rows.timer(case_id, state, "agreement_unsigned", left + timedelta(days=14), "pending")
    elif state == "first_meeting":
        rows.timer(case_id, state, "meeting_date_missing", left + timedelta(days=14), "pending")


def build_database(url: str, *, mentors: int, relations: int, seed: int) -> dict[str, int]:
    """A migrated SQLite file holding the programme, and a coordinator who can log in."""
    engine = db.make_engine(url)
    db.migrate(engine)
    rows = Rows(datetime.now(UTC), random.Random(seed))
    counts = build_programme(rows, mentors=mentors, relations=relations)
    order = [Person, MentorProfile, Credential, Case, Application, Relation, AuditEvent, Timer]
    with db.transaction(db.session_factory(engine)) as session:
        for model in order:
            table = rows.tables.get(model, [])
            for start in range(0, len(table), 5_000):
                session.execute(insert(model), table[start : start + 5_000])
            counts[f"rows_{model.__tablename__}"] = len(table)
    engine.dispose()
    app = bootstrap.build(replace(load_settings(environ={}), database_url=url))
    with app.unit() as tx:
        accounts.add_user(
            tx, name="Koordinaator", email=COORDINATOR, role="coordinator", password=PASSWORD
        )
    with app.unit() as tx:
        counts["queue_items"] = len(queries.work_queue(tx, language="et"))
    app.engine.dispose()
    return counts


# -- the server -----------------------------------------------------------------------------------


class Server:
    """`mentorlus serve` on the benchmark database, in its own process."""

    def __init__(self, url: str, folder: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "MENTORLUS_DATABASE__URL": url,
            "MENTORLUS_WEB__BASE_URL": self.base_url,
            "MENTORLUS_SECRET_KEY": secrets.token_urlsafe(48),
        }
        self.log = (folder / "server.log").open("w")
        command = [str(Path(sys.executable).parent / "mentorlus"), "serve", f"--port={self.port}"]
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=self.log)

    def wait_ready(self, client: httpx.Client, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server stopped; see {self.log.name}")
            try:
                if client.get("/static/style.css").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the server did not answer in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def log_in(client: httpx.Client) -> None:
    form = client.get("/console/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token, "no CSRF token on the login page"
    answer = client.post(
        "/console/login",
        data={"csrf": token.group(1), "email": COORDINATOR, "password": PASSWORD},
    )
    if answer.status_code != 303 or answer.headers["location"] != "/console":
        raise RuntimeError(f"the coordinator could not log in: {answer.status_code}")


# -- measuring -------------------------------------------------------------------------------------


def requests() -> dict[str, Iterator[str]]:
    """The URL of each kind of request, going round the filters."""
    regions = [name for name, _ in REGIONS]

    def page() -> Iterator[str]:
        while True:
            for region in regions:
                yield f"/?topic=career&region={region}&free=on"

    def api() -> Iterator[str]:
        while True:
            for number, region in enumerate(regions):
                topic = TOPICS[number % len(TOPICS)]
                yield f"/api/v1/mentors?topic={topic}&region={region}&free=true"

    def fixed(url: str) -> Iterator[str]:
        while True:
            yield url

    return {
        "trivial": fixed("/static/style.css"),
        "directory_page": page(),
        "directory_api": api(),
        "queue": fixed("/console"),
    }


def measure(client: httpx.Client, *, rounds: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per request of each kind; the kinds take turns, in a shifting order."""
    urls = requests()
    kinds = list(urls)
    spent: dict[str, list[float]] = {kind: [] for kind in kinds}
    for turn in range(warmup + rounds):
        for kind in kinds[turn % len(kinds) :] + kinds[: turn % len(kinds)]:
            url = next(urls[kind])
            began = time.perf_counter()
            answer = client.get(url)
            elapsed = (time.perf_counter() - began) * 1000
            if answer.status_code != 200:
                raise RuntimeError(f"GET {url}: {answer.status_code}")
            if turn >= warmup:
                spent[kind].append(elapsed)
    return spent


def sample(client: httpx.Client) -> dict[str, str]:
    """What the pages show, to check the benchmark measures real work."""
    found = re.search(
        r'class="count">.*?<strong>(\d+)</strong>',
        client.get(next(requests()["directory_page"])).text,
        re.S,
    )
    queue = re.search(r"Tööjärjekord \((\d+)", client.get("/console").text)
    api = client.get("/api/v1/mentors?topic=career")
    return {
        "directory_page_matches": found.group(1) if found else "?",
        "directory_api_items": str(len(api.json())),
        "directory_api_total": api.headers.get("x-total-count", "?"),
        "queue_page_count": queue.group(1) if queue else "?",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mentors", type=int, default=5_000)
    parser.add_argument("--relations", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=100, help="measured requests of each kind")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests of each kind")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--dir", type=Path, help="keep the database here and reuse it if it exists (no temp dir)"
    )
    args = parser.parse_args()

    print(f"python={platform.python_version()} sqlite={sqlite3.sqlite_version}")
    print(f"machine={platform.machine()} cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="mentorlus-web-") as temporary:
        folder = args.dir or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "bench.db"
        url = f"sqlite:///{path}"
        if not path.exists():
            log(f"building {args.mentors} listed mentors and {args.relations} relations in {path}")
            began = time.perf_counter()
            counts = build_database(
                url, mentors=args.mentors, relations=args.relations, seed=args.seed
            )
            for key, value in counts.items():
                print(f"{key}={value}")
            print(f"build_s={time.perf_counter() - began:.1f}")
        server = Server(url, folder)
        try:
            with httpx.Client(base_url=server.base_url, timeout=120) as client:
                server.wait_ready(client)
                log_in(client)
                for key, shown in sample(client).items():
                    print(f"{key}={shown}")
                log(f"measuring {args.requests} requests of each kind")
                spent = measure(client, rounds=args.requests, warmup=args.warmup)
        finally:
            server.stop()
    medians = {kind: statistics.median(values) for kind, values in spent.items()}
    for kind, median in medians.items():
        print(f"{kind}_ms={median:.2f}")
    directory = max(medians["directory_page"], medians["directory_api"])
    print(f"directory_ms={directory:.2f}")
    print(f"directory_vs_trivial={directory / medians['trivial']:.2f}")
    print(f"queue_vs_trivial={medians['queue'] / medians['trivial']:.2f}")


if __name__ == "__main__":
    main()
