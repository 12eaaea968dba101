"""Workflows as data: the specs a workflow file becomes, and firing a trigger on a case.

lifecycle/loader.py reads and validates the files. A workflow file declares its states
(labels, the action a state waits for, the emails and timers entering it starts), how a
case starts, and its transitions (trigger, sources, destination or none for a step that
keeps the state, roles, named guards, an effect and the fields it needs). The machine
decides legality and the next state; the database transaction around `fire` is the
rollback, so callbacks hold no side effects.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from lifecycle.config import Settings
from lifecycle.errors import InvalidInput, Refused
from lifecycle.store.models import Application, Case, Person, Relation

# Control characters text may not hold; tabs and line breaks are text.
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

ROLES = ("coordinator", "committee", "applicant", "mentor", "mentee", "system")
RECIPIENTS = ("applicant", "mentor", "mentee", "committee", "coordinators")
FIELD_TYPES = ("text", "datetime", "date", "int", "bool", "choice", "email_list")
# Where the link in an email leads: a page for one person and one case.
LINK_ACTIONS = (
    "provide_info",
    "availability",
    "respond",
    "schedule_meeting",
    "go_on",
    "agreement",
    "log_meeting",
    "close",
    "feedback",
)


class WorkflowError(Exception):
    """A workflow file is wrong; the message names the file and the key."""


@dataclass
class Context:
    """Everything a guard, effect or anchor may look at while a case moves."""

    session: Session
    settings: Settings
    now: datetime
    case: Case
    subject: Application | Relation
    actor: Person | None  # None: the system (a timer)
    roles: frozenset[str]
    values: dict[str, Any] = field(default_factory=dict)
    override_reason: str = ""
    # What an effect touched that the step's emails are about, e.g. {"meeting_id": 4}.
    refs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Position:
    """What the shared machine moves: a case's state."""

    state: str


Guard = Callable[[Context], str | None]  # returns the reason it refuses, or None
Effect = Callable[[Context], None]
Anchor = Callable[[Context], datetime | None]


@dataclass(frozen=True)
class Email:
    template: str
    to: tuple[str, ...]
    link: str | None = None  # the action the reader's link leads to (LINK_ACTIONS)
    calendar: bool = False  # carries the invitation of the meeting or interview it is about


@dataclass(frozen=True)
class TimerSpec:
    name: str
    after: timedelta
    anchor: str  # "state_entry" or a registered anchor
    email: Email | None
    trigger: str | None
    repeat: bool
    cancel_when: str | None  # an anchor: once it has a time, the timer is no longer needed
    overdue: bool  # marks the case overdue in the coordinators' work queue and digest


@dataclass(frozen=True)
class StateSpec:
    name: str
    label: Mapping[str, str]
    action: Mapping[str, str] | None  # what the case waits for; None when nothing
    waits_for: str | None
    terminal: bool
    emails: tuple[Email, ...]
    timers: tuple[TimerSpec, ...]


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    required: bool
    choices: tuple[str, ...] = ()
    max_length: int = 10_000  # text: the longest taken, in characters


@dataclass(frozen=True)
class TransitionSpec:
    trigger: str
    sources: tuple[str, ...]
    dest: str | None  # None: the step keeps the state
    roles: tuple[str, ...]
    guards: tuple[str, ...]
    overridable: bool
    effect: str | None
    fields: tuple[FieldSpec, ...]
    emails: tuple[Email, ...]
    label: Mapping[str, str]


@dataclass
class Workflow:
    name: str
    path: Path
    label: Mapping[str, str]
    states: dict[str, StateSpec]
    start: TransitionSpec
    transitions: list[TransitionSpec]
    registries: Registries
    machine: Any = None

    def state(self, name: str) -> StateSpec:
        return self.states[name]

    def transitions_from(self, state: str) -> list[TransitionSpec]:
        return [t for t in self.transitions if state in t.sources]

    def triggers_for(self, state: str, roles: frozenset[str]) -> list[TransitionSpec]:
        """The steps a person with these roles may take from a state, one per trigger."""
        seen: dict[str, TransitionSpec] = {}
        for spec in self.transitions_from(state):
            if roles & set(spec.roles) and spec.trigger not in seen:
                seen[spec.trigger] = spec
        return list(seen.values())

    def fire(self, ctx: Context, trigger: str) -> TransitionSpec:
        """The step trigger takes from ctx.case's state, or Refused naming the rule.

        The step's dest is the new state (None: the state stays).
        """
        state = ctx.case.state
        candidates = [t for t in self.transitions if t.trigger == trigger and state in t.sources]
        if not candidates:
            possible = sorted({t.trigger for t in self.transitions_from(state)}) or ["none"]
            raise Refused(
                f"'{trigger}' is not possible in state '{state}' (possible: {', '.join(possible)})",
                rule="state",
            )
        spec = candidates[0]
        if not ctx.roles & set(spec.roles):
            yours = ", ".join(sorted(ctx.roles)) or "no role on this case"
            raise Refused(
                f"'{trigger}' may be done by {', '.join(spec.roles)}; you are {yours}",
                rule="role",
            )
        if ctx.override_reason and not (spec.overridable and "coordinator" in ctx.roles):
            raise Refused(
                f"'{trigger}' cannot be overridden by you; only a coordinator may override "
                "an overridable rule",
                rule="override",
            )
        ctx.values = parse_fields(spec.fields, ctx.values, ctx.settings)
        if spec.effect:
            self.registries.effects[spec.effect](ctx)
        # The machine moves a stand-in: the engine writes the case's row itself and then
        # shows the new state on the loaded case, which so never has changes to flush.
        position = Position(state)
        if not self.machine.events[trigger].trigger(position, ctx=ctx):
            guard, reason = self.first_refusal(ctx, candidates)
            raise Refused(reason, rule=guard)
        moved_to = None if position.state == state else position.state
        return next(t for t in candidates if t.dest == moved_to)

    def first_refusal(self, ctx: Context, candidates: list[TransitionSpec]) -> tuple[str, str]:
        for spec in candidates:
            for name in spec.guards:
                reason = self.registries.guards[name](ctx)
                if reason:
                    return name, reason
        return "guard", "a rule refused this step"


def _plausible(moment: Any) -> Any:
    # A year far out would overflow the reminders computed from it.
    if not 1900 <= moment.year <= 2200:
        raise ValueError("must be a date between the years 1900 and 2200")
    return moment


def parse_fields(
    specs: tuple[FieldSpec, ...], raw: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """Check and convert the data a step needs; unknown keys are refused, not ignored."""
    known = {spec.name for spec in specs}
    unknown = sorted(set(raw) - known)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidInput(unknown[0], f"this step takes no such field (it takes: {allowed})")
    values: dict[str, Any] = {}
    for spec in specs:
        value = raw.get(spec.name)
        if value is None or value == "" or value == []:
            if spec.required:
                raise InvalidInput(spec.name, "is required for this step")
            continue
        values[spec.name] = _convert(spec, value, settings)
    return values


def _convert(spec: FieldSpec, value: Any, settings: Settings) -> Any:
    try:
        if spec.type == "text":
            if not isinstance(value, str):
                raise ValueError("must be text")
            text = value.strip()
            if spec.required and not text:
                raise ValueError("is required for this step")
            if CONTROL_IN_TEXT.search(text):
                raise ValueError("must be text without control characters")
            if len(text) > spec.max_length:
                raise ValueError(
                    f"must be at most {spec.max_length} characters (it has {len(text)})"
                )
            return text
        if spec.type == "int":
            return int(value)
        if spec.type == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError("must be yes or no")
        if spec.type == "date":
            day = value if isinstance(value, date) else date.fromisoformat(str(value))
            return _plausible(day)
        if spec.type == "datetime":
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            if moment.tzinfo is None:  # a local time, as people type it
                moment = moment.replace(tzinfo=settings.time_zone)
            return _plausible(moment)
        if spec.type == "choice":
            if value not in spec.choices:
                raise ValueError(f"must be one of {', '.join(spec.choices)}")
            return value
        if spec.type == "email_list":
            items = value if isinstance(value, list) else str(value).split(",")
            return [str(item).strip().lower() for item in items if str(item).strip()]
    except ValueError as error:
        message = str(error)
        if spec.type in ("int", "date", "datetime") and "must" not in message:
            examples = {
                "int": "a whole number",
                "date": "a date like 2026-03-01",
                "datetime": "a date and time like 2026-03-01T14:00",
            }
            message = f"must be {examples[spec.type]}"
        raise InvalidInput(spec.name, message) from None
    raise AssertionError(spec.type)


@dataclass(frozen=True)
class Registries:
    guards: Mapping[str, Guard]
    effects: Mapping[str, Effect]
    anchors: Mapping[str, Anchor]
