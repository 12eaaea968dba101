"""The demo's story file, story.toml, read into the staff and the stories that `story` plays.

The file is checked as it is read, before anything is written: a missing or misspelt key, a step
by someone the story does not know, a relation with a mentor who never applied raise ConfigError
naming the story and the key. What the values mean (a topic, a trigger, a vote) the service
checks when the step is played.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, TypeVar

from lifecycle.config import ConfigError, Settings

STORY_FILE = Path(__file__).with_name("story.toml")
# The keys the file must or may have; a misspelt one is refused, not ignored.
# fmt: off
TOP_KEYS = ("days_back", "password", "coordinators", "committee", "vote_notes",
            "application_defaults", "application", "mentee_defaults", "mentee", "relation")
APPLICATION_KEYS = ("name", "email", "organisation", "region", "years_in_social_field", "topics",
                    "background", "steps")
# fmt: on
MENTEE_KEYS = ("name", "email", "organisation", "region")
RELATION_KEYS = ("mentee", "mentor", "topic", "question", "steps")
STORY_KEYS = ("steps", "round_opened_by_day")  # about the story, not the form's fields
STEP_KEYS = ("day", "at", "hours_later", "by", "do")  # the rest are the trigger's fields
ANYONE = ("coordinator", "system")  # who may take a step in any story, besides the staff
KIND_NAMES = {str: "text", int: "a whole number", list: "a list", dict: "a table"}

T = TypeVar("T")


class Stage:
    """The calendar the stories are written against: day 0 is `days_back` days before today."""

    def __init__(self, settings: Settings, now: datetime, days_back: int) -> None:
        self.zone = settings.time_zone
        self.now = now
        self.today = now.astimezone(self.zone).date()
        self.base = self.today - timedelta(days=days_back)
        self.rounds = _rounds(settings, self.at(0, time(0)), now)

    def at(self, day: int, clock: time) -> datetime:
        """Day `day` of the story at a local wall-clock time, in UTC."""
        return datetime.combine(self.date(day), clock, self.zone).astimezone(UTC)

    def date(self, day: int) -> date:
        return self.base + timedelta(days=day)

    def day_of(self, moment: datetime) -> int:
        return (moment.astimezone(self.zone).date() - self.base).days

    def round_open(self, moment: datetime) -> bool:
        return any(opens <= moment < closes for _, opens, closes in self.rounds)


def _rounds(
    settings: Settings, start: datetime, now: datetime
) -> list[tuple[str, datetime, datetime]]:
    """The rounds of the configured schedule (spring and autumn): from the last one that
    opened before the stories begin up to the next one still to come."""
    rounds = []
    for year in range(start.year - 1, now.year + 2):
        for month, day in settings.intake_opens:
            name = "Kevadvoor" if month < 7 else "Sügisvoor"
            opens = datetime(year, month, day, settings.intake_open_hour, tzinfo=settings.time_zone)
            closes = opens + settings.intake_length
            rounds.append((f"{name} {year}", opens.astimezone(UTC), closes.astimezone(UTC)))
    first = max(i for i, (_, opens, _) in enumerate(rounds) if opens <= start)
    upcoming = min(i for i, (_, opens, _) in enumerate(rounds) if opens > now)
    return rounds[first : upcoming + 1]


@dataclass(frozen=True)
class Staff:
    name: str
    email: str
    role: str  # coordinator or committee
    language: str


@dataclass(frozen=True)
class Step:
    when: datetime
    by: str  # applicant, mentee, mentor, coordinator, system or a staff member's email
    trigger: str
    values: dict[str, Any]


@dataclass
class Story:
    name: str  # where it is in the file, for messages
    data: dict[str, Any]  # what the application form or the mentee's request holds
    steps: list[Step]  # the first one opens the case
    ref: str = ""  # the case, once the first step has opened it


@dataclass(frozen=True)
class Demo:
    stage: Stage
    password: str
    staff: list[Staff]
    stories: list[Story]

    def first(self, role: str) -> str:
        """The first staff member in this role; the first coordinator is the one who acts."""
        return next(member.email for member in self.staff if member.role == role)


class _Table:
    """A table of the story file that names itself in every error about it."""

    def __init__(self, raw: object, where: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must be a table")
        self.raw: dict[str, Any] = raw
        self.where = where

    def take(self, key: str, kind: type[T]) -> T:
        value = self.raw.get(key)
        if value is None:
            raise ConfigError(f"{self.where}: {key} is missing")
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"{self.where}: {key} must be {KIND_NAMES[kind]}")
        return value

    def tables(self, key: str, label: str) -> list[_Table]:
        items = self.take(key, list)
        return [_Table(item, f"{self.where}, {label} {n}") for n, item in enumerate(items, 1)]

    def require(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key not in self.raw:
                raise ConfigError(f"{self.where}: {key} is missing")

    def allow(self, *known: Iterable[str]) -> None:
        unknown = sorted(set(self.raw).difference(*known))
        if unknown:
            raise ConfigError(f"{self.where}: unknown key {unknown[0]!r} (misspelt?)")


def read(settings: Settings, now: datetime, path: Path = STORY_FILE) -> Demo:
    """The story file, checked, on the calendar of a demo loaded at `now`."""
    try:
        top = _Table(tomllib.loads(path.read_text(encoding="utf-8")), path.name)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path.name}: {error}") from None
    top.allow(TOP_KEYS)
    stage = Stage(settings, now, top.take("days_back", int))
    staff = [_staff(table, "coordinator") for table in top.tables("coordinators", "coordinator")]
    staff += [_staff(table, "committee") for table in top.tables("committee", "member")]
    if {member.role for member in staff} != {"coordinator", "committee"}:
        raise ConfigError(f"{path.name}: at least one coordinator and one committee member")
    reader = _Reader(stage, staff, top.take("vote_notes", dict))
    defaults = top.take("application_defaults", dict)
    applications = [
        reader.application(table, defaults) for table in top.tables("application", "application")
    ]
    mentee_defaults = top.take("mentee_defaults", dict)
    mentees: dict[str, dict[str, Any]] = {}
    for table in top.tables("mentee", "mentee"):
        table.allow(MENTEE_KEYS, mentee_defaults)
        table.require(MENTEE_KEYS)
        email = table.take("email", str)
        if email in mentees:
            raise ConfigError(f"{table.where}: {email} is already a mentee above")
        mentees[email] = {**mentee_defaults, **table.raw}
    mentors = {str(story.data["email"]) for story in applications}
    relations = [
        reader.relation(table, mentees, mentors) for table in top.tables("relation", "relation")
    ]
    return Demo(stage, top.take("password", str), staff, applications + relations)


def _staff(table: _Table, role: str) -> Staff:
    table.allow(("name", "email", "language"))
    language = table.take("language", str) if "language" in table.raw else "et"
    return Staff(table.take("name", str), table.take("email", str), role, language)


class _Reader:
    """Reads the stories: their people, and their steps on the stage's calendar."""

    def __init__(self, stage: Stage, staff: list[Staff], vote_notes: dict[str, Any]) -> None:
        self.stage = stage
        self.staff = {member.email for member in staff}
        self.committee = [member.email for member in staff if member.role == "committee"]
        self.vote_notes = vote_notes

    def application(self, table: _Table, defaults: dict[str, Any]) -> Story:
        table.where = f'{table.where} "{table.take("name", str)}"'
        table.allow(APPLICATION_KEYS, defaults, STORY_KEYS)
        table.require(APPLICATION_KEYS)
        offset = self._round_day(table) if "round_opened_by_day" in table.raw else 0
        form = _Table({**defaults, **table.raw}, table.where)
        data = {key: value for key, value in form.raw.items() if key not in STORY_KEYS}
        data["credentials"] = [
            self._credential(credential, offset)
            for credential in form.tables("credentials", "credential")
        ]
        return Story(table.where, data, self._steps(table, offset, "applicant", opening="submit"))

    def relation(
        self, table: _Table, mentees: dict[str, dict[str, Any]], mentors: set[str]
    ) -> Story:
        mentee, mentor = table.take("mentee", str), table.take("mentor", str)
        table.where = f"{table.where} ({mentee} → {mentor})"
        table.allow(RELATION_KEYS)
        table.require(RELATION_KEYS)
        if mentee not in mentees:
            raise ConfigError(f"{table.where}: mentee {mentee} is not among the [[mentee]] above")
        if mentor not in mentors:
            raise ConfigError(f"{table.where}: mentor {mentor} has no [[application]] above")
        data = {**mentees[mentee], "mentor": mentor}
        data |= {"topic": table.raw["topic"], "question": table.raw["question"]}
        steps = self._steps(table, 0, "mentee", "mentor", opening="request")
        return Story(table.where, data, steps)

    def _round_day(self, table: _Table) -> int:
        by_day = table.take("round_opened_by_day", int)
        days = [self.stage.day_of(opens) for _, opens, _ in self.stage.rounds]
        if not any(day <= by_day for day in days):
            raise ConfigError(f"{table.where}: no intake round opened by day {by_day}")
        return max(day for day in days if day <= by_day)

    def _credential(self, table: _Table, offset: int) -> dict[str, Any]:
        table.allow(("kind", "issuer", "year", "valid_until"))
        valid_until = None
        if "valid_until" in table.raw:
            where = f"{table.where}: valid_until"
            until = self._moment(_Table(table.raw["valid_until"], where), offset)
            if isinstance(until, datetime):
                raise ConfigError(f"{where} is a date: {{ day = N }}, without at")
            valid_until = until.isoformat()  # as the application form sends it
        return {
            "kind": table.take("kind", str),
            "issuer": table.take("issuer", str),
            "year": table.take("year", int),
            "valid_until": valid_until,
        }

    def _steps(self, story: _Table, offset: int, *roles: str, opening: str) -> list[Step]:
        steps: list[Step] = []
        for step in story.tables("steps", "step"):
            if "hours_later" in step.raw:
                if not steps or "day" in step.raw or "at" in step.raw:
                    raise ConfigError(
                        f"{step.where}: hours_later replaces day and at, after an earlier step"
                    )
                when = steps[-1].when + timedelta(hours=step.take("hours_later", int))
            else:
                when = self.stage.at(offset + step.take("day", int), _clock(step, "at"))
            by = step.take("by", str)
            if by not in (*roles, *ANYONE) and by not in self.staff:
                raise ConfigError(
                    f"{step.where}: by is {by!r}; it must be {', '.join((*roles, *ANYONE))} "
                    "or the email of a coordinator or committee member"
                )
            trigger = step.take("do", str)
            values = {
                key: self._moment(_Table(value, f"{step.where}: {key}"), offset)
                if isinstance(value, dict)
                else value
                for key, value in step.raw.items()
                if key not in STEP_KEYS
            }
            if trigger == "schedule_interview":
                values.setdefault("committee", list(self.committee))
            if trigger == "record_vote" and "notes" not in values:
                vote = step.take("vote", str)
                if vote not in self.vote_notes:
                    raise ConfigError(f"{step.where}: no notes, and [vote_notes] has no {vote}")
                values["notes"] = self.vote_notes[vote]
            steps.append(Step(when, by, trigger, values))
        if not steps or steps[0].trigger != opening:
            raise ConfigError(f"{story.where}: the first step must be {opening}: it opens the case")
        return steps

    def _moment(self, table: _Table, offset: int) -> date | datetime:
        """{ day = N } is that day; { day = N, at = "HH:MM" } that moment."""
        table.allow(("day", "at"))
        day = offset + table.take("day", int)
        if "at" in table.raw:
            return self.stage.at(day, _clock(table, "at"))
        return self.stage.date(day)


def _clock(table: _Table, key: str) -> time:
    text = table.take(key, str)
    try:
        return datetime.strptime(text, "%H:%M").time()
    except ValueError:
        raise ConfigError(f'{table.where}: {key} is {text!r}, not a time like "09:30"') from None
