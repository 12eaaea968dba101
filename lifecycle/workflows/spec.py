"""Workflows as data: the specs a workflow file becomes, and firing a trigger on a case.

lifecycle/loader.py reads and validates the files. A workflow file declares its states
(labels, the action a state waits for, the emails and timers entering it starts), how a
case starts, and its transitions (trigger, sources, destination or none for a step that
keeps the state, roles, named guards, an effect and the fields it needs, each with a type
and bounds that `stepdata` holds every caller's data to). The machine decides legality and
the next state; the database transaction around `fire` is the rollback, so callbacks hold
no side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from lifecycle.config import Settings
from lifecycle.errors import Refused
from lifecycle.store.models import Application, Case, Person, Relation
from lifecycle.workflows.stepdata import FieldSpec, parse_fields, read_field

ROLES = ("coordinator", "committee", "applicant", "mentor", "mentee", "system")
RECIPIENTS = ("applicant", "mentor", "mentee", "committee", "coordinators")
# The written reason for overriding a rule is checked as any text a step takes.
OVERRIDE_REASON = FieldSpec("override_reason", "text", required=False)
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
    # What an effect adds to the audit event's detail, e.g. a changed vote's {"previous": ...}.
    detail: dict[str, Any] = field(default_factory=dict)


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
            # The steps this actor could take: another role's (a committee member's vote, which
            # a decided application still takes only to refuse it) would mislead.
            possible = sorted(t.trigger for t in self.triggers_for(state, ctx.roles)) or ["none"]
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
        if ctx.override_reason:
            ctx.override_reason = read_field(OVERRIDE_REASON, ctx.override_reason, ctx.settings)
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


@dataclass(frozen=True)
class Registries:
    guards: Mapping[str, Guard]
    effects: Mapping[str, Effect]
    anchors: Mapping[str, Anchor]
