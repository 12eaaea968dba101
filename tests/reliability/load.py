"""The load: mentees, mentors, applicants and coordinators using the web processes over HTTP.

Every actor goes through what a person or an integration uses, never the database:

- mentees browse `GET /api/v1/mentors` and ask a mentor with `POST /api/v1/requests`, each
  from a client address of their own (X-Forwarded-For, as behind the association's proxy),
  then confirm it from the link in the email the sink received;
- applicants apply with `POST /api/v1/applications`, and confirm it the same way;
- mentors act on the links in the emails the SMTP sink received (follow the link, then
  answer on its page): accept, decline or ignore a request, schedule the first meeting;
- a coordinator in the console (logged in once, CSRF token, the case's version) reviews
  applications along one of three paths and cancels some fresh requests;
- an integration with a coordinator's HTTP Basic login cancels relations over the API.

Each call goes to one of the web processes at random. A write the service confirmed (the page
of a confirmed submission, naming its case, or 303 after a form) is kept as an Ack: it must be
in the audit trail at the end.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from lifecycle.demo import scenarios
from tests.reliability.harness import Sink

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
VERSION = re.compile(r'name="version" value="(\d+)"')
TRIGGER = re.compile(r'name="trigger" value="([a-z_]+)"')
ACT = re.compile(r"^/act/([AM]-\d+)/([a-z_]+)$")
ZONE = ZoneInfo("Europe/Tallinn")


@dataclass(frozen=True)
class Mentor:
    email: str
    organisation: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class Ack:
    """A step the service confirmed to its caller."""

    ref: str
    trigger: str


@dataclass
class Stats:
    """What the load did and what it got back; shared by every actor thread."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    acks: list[Ack] = field(default_factory=list)
    # (time, kind, detail) of every 5xx answer and every call that got no answer
    failures: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answered(self, kind: str, status: int, seconds: float, detail: str) -> None:
        with self.lock:
            self.outcomes[(kind, str(status))] += 1
            self.latencies.setdefault(kind, []).append(seconds)
            if status >= 500:
                self.failures.append((time.time(), kind, f"{status} {detail[:120]}"))

    def unanswered(self, kind: str, error: Exception) -> None:
        with self.lock:
            self.outcomes[(kind, type(error).__name__)] += 1
            self.failures.append((time.time(), kind, f"{type(error).__name__}: {error}"))

    def ack(self, ref: str, trigger: str) -> None:
        with self.lock:
            self.acks.append(Ack(ref, trigger))

    @property
    def calls(self) -> int:
        with self.lock:
            return sum(self.outcomes.values())


class Agenda:
    """Work due at a time: a heap the actor threads take from when an item is due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Any]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()

    def put(self, delay: float, item: Any) -> None:
        with self._ready:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), item))
            self._ready.notify()

    def take(self, stop: threading.Event) -> Any | None:
        with self._ready:
            while not stop.is_set():
                wait = self._heap[0][0] - time.monotonic() if self._heap else 0.5
                if self._heap and wait <= 0:
                    return heapq.heappop(self._heap)[2]
                self._ready.wait(min(max(wait, 0.01), 0.5))
        return None


def local(moment: datetime) -> str:
    """A datetime as a form takes it: local time, to the minute."""
    return moment.astimezone(ZONE).strftime("%Y-%m-%dT%H:%M")


class Traffic:
    """The actor threads; start() and stop() them around the run."""

    def __init__(
        self,
        *,
        webs: list[str],
        mentors: list[Mentor],
        coordinator: tuple[str, str],
        committee: list[str],
        sink: Sink,
        stats: Stats,
        seed: int,
        timeout: float,
        mentees: int = 3,
    ) -> None:
        self.webs = webs
        self.mentors = mentors
        self.by_email = {mentor.email: mentor for mentor in mentors}
        self.coordinator = coordinator
        self.committee = committee
        self.sink = sink
        self.stats = stats
        self.seed = seed
        self.timeout = timeout
        self.stop_event = threading.Event()
        self.links = Agenda()  # (path) a mentor will follow
        self.console = Agenda()  # (ref, steps) the coordinator will take
        self.sequence = itertools.count(1)
        self.seen: Counter[str] = Counter()  # how often a mentor was asked about a case
        self.threads = [
            *(threading.Thread(target=self._mentee, args=(n,)) for n in range(mentees)),
            threading.Thread(target=self._applicant),
            threading.Thread(target=self._read_mail),
            *(threading.Thread(target=self._mentor) for _ in range(2)),
            threading.Thread(target=self._coordinator),
            threading.Thread(target=self._integration),
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join()

    # -- calls ---------------------------------------------------------------------------------

    def _call(
        self, kind: str, client: httpx.Client, method: str, path: str, **options: Any
    ) -> httpx.Response | None:
        url = random.choice(self.webs) + path
        started = time.monotonic()
        try:
            response = client.request(method, url, **options)
        except httpx.HTTPError as error:
            self.stats.unanswered(kind, error)
            return None
        self.stats.answered(kind, response.status_code, time.monotonic() - started, response.text)
        return response

    def _client(self, **options: Any) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=False, **options)

    def _pause(self, rng: random.Random, low: float, high: float) -> bool:
        """Wait a while; False once the run is over."""
        return not self.stop_event.wait(rng.uniform(low, high))

    # -- mentees and applicants ----------------------------------------------------------------

    def _mentee(self, number: int) -> None:
        rng = random.Random(f"{self.seed}:mentee:{number}")
        with self._client() as client:
            while self._pause(rng, 0.2, 0.6):
                mentor = rng.choice(self.mentors)
                topic = rng.choice(mentor.topics)
                path = f"/api/v1/mentors?topic={topic}"
                listing = self._call("directory", client, "GET", path)
                if listing is None or listing.status_code != 200 or not listing.json():
                    continue
                n = next(self.sequence)
                data = scenarios.mentee(
                    f"mentee-{n}@example.org",
                    f"Juhendatav Õie {n}",
                    mentor.email,
                    topic=topic,
                    organisation=f"Sotsiaalkeskus {n}",
                )
                del data["mentor"]  # the public API names the mentor by their directory id
                data["mentor_id"] = rng.choice(listing.json())["id"]
                self._submit(client, "request", "/api/v1/requests", data, n, self._requested)

    def _requested(self, ref: str) -> None:
        self.stats.ack(ref, "request")
        rng = random.Random(f"{self.seed}:{ref}:requested")
        if rng.random() < 0.1:  # the coordinator cancels it while the mentor looks
            steps = [("cancel", {"reason": "Pöördumine tühistati"})]
            self.console.put(rng.uniform(0.5, 8), (ref, steps))

    def _applied(self, ref: str) -> None:
        self.stats.ack(ref, "submit")
        rng = random.Random(f"{self.seed}:{ref}:applied")
        self.console.put(rng.uniform(0.5, 3), (ref, self._review(rng)))

    def _applicant(self) -> None:
        rng = random.Random(f"{self.seed}:applicant")
        with self._client() as client:
            while self._pause(rng, 1.0, 2.0):
                n = next(self.sequence)
                data = scenarios.applicant(f"kandidaat-{n}@example.org", f"Kandidaat Õun {n}")
                self._submit(client, "application", "/api/v1/applications", data, n, self._applied)

    def _submit(
        self,
        client: httpx.Client,
        kind: str,
        path: str,
        data: dict[str, Any],
        n: int,
        then: Callable[[str], None],
    ) -> None:
        """A public submission from a client address of its own; its owner confirms it once
        the email arrives (in a thread of its own: the mail may wait behind a backlog), and
        `then` gets the case's ref."""
        _, offset = self.sink.read_from(0)  # the confirmation arrives after this
        forwarded = {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}
        held = self._call(kind, client, "POST", path, json=data, headers=forwarded)
        if held is not None and held.status_code == 202:
            confirming = threading.Thread(
                target=self._confirm, args=(data["email"], offset, then), daemon=True
            )
            confirming.start()

    def _confirm(self, email: str, offset: int, then: Callable[[str], None]) -> None:
        """As the owner of the address: the link in the email the sink received, then the
        button on its page, in a browser of its own; no ref if the service refused or was
        away, or the run ended first."""
        link = None
        while link is None:
            fresh, offset = self.sink.read_from(offset)
            mine = (m["links"] for m in fresh if m["to"] == email and m["links"])
            link = next(mine, [None])[0]
            if link is None and self.stop_event.wait(0.3):
                return
        with self._client() as browser:
            followed = self._call("confirm link", browser, "GET", link)
            if followed is None or followed.status_code != 303:
                return
            page = self._call("confirm page", browser, "GET", followed.headers["location"])
            if page is None or page.status_code != 200:
                return
            form = {"csrf": _first(CSRF, page.text)}
            done = self._call("confirm", browser, "POST", followed.headers["location"], data=form)
        found = re.search(r"\b[AM]-\d+\b", done.text) if done and done.status_code == 200 else None
        if found:
            then(found.group(0))

    def _review(self, rng: random.Random) -> list[tuple[str, dict[str, str]]]:
        """One of three ways a coordinator takes an application."""
        path = rng.random()
        if path < 0.5:
            interview = local(datetime.now(ZONE) + timedelta(days=14))
            return [
                ("begin_review", {}),
                *(("verify_evidence", {"kind": kind}) for kind in ("degree", "experience")),
                ("verify_evidence", {"kind": "credential"}),
                ("mark_eligible", {}),
                (
                    "schedule_interview",
                    {
                        "interview_at": interview,
                        "place": "Tallinn, Lastekodu 12",
                        "committee": ",".join(self.committee),
                    },
                ),
            ]
        if path < 0.75:  # left waiting for the applicant: the info timers come due
            return [("begin_review", {}), ("request_info", {"message": "Palun lisage diplom."})]
        return [("begin_review", {}), ("mark_ineligible", {"reason": "Kraad puudub."})]

    # -- mentors, through their email --------------------------------------------------------

    def _read_mail(self) -> None:
        """Hand each link in a mentor's new email to the mentors, a moment after it arrived."""
        rng = random.Random(f"{self.seed}:mail")
        offset = 0
        while not self.stop_event.wait(0.2):
            fresh, offset = self.sink.read_from(offset)
            for message in fresh:
                if message["to"] in self.by_email:
                    for path in message["links"]:
                        self.links.put(rng.uniform(0.2, 3.0), path)

    def _mentor(self) -> None:
        while (path := self.links.take(self.stop_event)) is not None:
            with self._client() as browser:  # each email opened in a fresh browser
                self._follow(browser, path)

    def _follow(self, browser: httpx.Client, path: str) -> None:
        followed = self._call("link", browser, "GET", path)
        if followed is None or followed.status_code != 303:
            return  # a used or expired link (the case moved on): nothing to do
        target = ACT.match(followed.headers["location"])
        if target is None:
            return
        ref, action = target.groups()
        page = self._call("act page", browser, "GET", target.group(0))
        if page is None or page.status_code != 200:
            return
        offered = set(TRIGGER.findall(page.text))
        step = self._mentor_step(ref, action, offered)
        if step is None:
            return
        trigger, values = step
        form = {"csrf": _first(CSRF, page.text), "version": _first(VERSION, page.text)}
        form.update(trigger=trigger, **{f"f_{key}": value for key, value in values.items()})
        answer = self._call("act", browser, "POST", target.group(0), data=form)
        if answer is not None and answer.status_code == 303:
            self.stats.ack(ref, trigger)

    def _mentor_step(
        self, ref: str, action: str, offered: set[str]
    ) -> tuple[str, dict[str, str]] | None:
        """What the mentor does with this link: decided per case, so a reminder agrees."""
        rng = random.Random(f"{self.seed}:{ref}:{action}")
        if action == "respond" and "accept" in offered:
            with self.stats.lock:
                self.seen[ref] += 1
                times = self.seen[ref]
            choice = rng.random()
            if choice < 0.55 or (times > 1 and choice < 0.85):  # some answer the reminder
                return "accept", {}
            if choice < 0.70:
                return "decline", {"reason": "Ajapuudus"}
            return None
        if action == "schedule_meeting" and "schedule_meeting" in offered:
            starts = local(datetime.now(ZONE) + timedelta(days=3))
            return "schedule_meeting", {"starts_at": starts, "place": "videokõne"}
        return None

    # -- coordinators ----------------------------------------------------------------------------

    def _coordinator(self) -> None:
        """The console: log in once, then open each case and take its next step."""
        rng = random.Random(f"{self.seed}:coordinator")
        with self._client() as browser:
            while not self._log_in(browser):
                if not self._pause(rng, 1, 2):
                    return
            while (work := self.console.take(self.stop_event)) is not None:
                ref, steps = work
                (trigger, values), rest = steps[0], steps[1:]
                page = self._call("case page", browser, "GET", f"/console/cases/{ref}")
                if page is None or page.status_code != 200:
                    self.console.put(1.0, (ref, steps))  # the database was away: again later
                    continue
                form = {"csrf": _first(CSRF, page.text), "version": _first(VERSION, page.text)}
                form.update(trigger=trigger, **{f"f_{k}": v for k, v in values.items()})
                path = f"/console/cases/{ref}/advance"
                answer = self._call("console step", browser, "POST", path, data=form)
                if answer is not None and answer.status_code == 303:
                    self.stats.ack(ref, trigger)
                    if rest:
                        self.console.put(rng.uniform(0.3, 1.5), (ref, rest))
                elif answer is None or answer.status_code >= 500:
                    self.console.put(1.0, (ref, steps))

    def _log_in(self, browser: httpx.Client) -> bool:
        form = self._call("login", browser, "GET", "/console/login")
        if form is None or form.status_code != 200:
            return False
        email, password = self.coordinator
        data = {"csrf": _first(CSRF, form.text), "email": email, "password": password}
        answer = self._call("login", browser, "POST", "/console/login", data=data)
        return answer is not None and answer.status_code == 303

    def _integration(self) -> None:
        """An integration with a coordinator's Basic login ends relations stuck at the start."""
        rng = random.Random(f"{self.seed}:integration")
        with self._client(auth=self.coordinator) as client:
            while self._pause(rng, 2.0, 4.0):
                listed = self._call(
                    "api cases",
                    client,
                    "GET",
                    "/api/v1/cases?workflow=mentoring&state=first_meeting",
                )
                if listed is None or listed.status_code != 200 or not listed.json():
                    continue
                ref = rng.choice(listed.json())["id"]
                step = {"trigger": "cancel", "values": {"reason": "Kohtumist ei toimunud"}}
                path = f"/api/v1/cases/{ref}/advance"
                answer = self._call("api step", client, "POST", path, json=step)
                if answer is not None and answer.status_code == 200:
                    self.stats.ack(ref, "cancel")


def _first(pattern: re.Pattern[str], text: str) -> str:
    found = pattern.search(text)
    return found.group(1) if found else ""
