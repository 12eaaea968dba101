"""Workflows as data: load `workflows/*.toml`, validate them, build one machine per workflow.

A workflow file declares its states (labels, the action a state waits for, the emails
and timers entering it starts), how a case starts, and its transitions (trigger,
sources, destination or none for a step that keeps the state, roles, named guards, an
effect and the fields it needs). The machine decides legality and the next state; the
database transaction around `fire` is the rollback, so callbacks hold no side effects.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session
from transitions import Machine

from lifecycle.config import ConfigError, Settings, parse_duration
from lifecycle.errors import InvalidInput, Refused
from lifecycle.models import Application, Case, Person, Relation

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
        """Move ctx.case by trigger, or raise Refused naming the rule; returns the step taken."""
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
        if not self.machine.events[trigger].trigger(ctx.case, ctx=ctx):
            guard, reason = self.first_refusal(ctx, candidates)
            raise Refused(reason, rule=guard)
        moved_to = None if ctx.case.state == state else ctx.case.state
        return next(t for t in candidates if t.dest == moved_to)

    def first_refusal(self, ctx: Context, candidates: list[TransitionSpec]) -> tuple[str, str]:
        for spec in candidates:
            for name in spec.guards:
                reason = self.registries.guards[name](ctx)
                if reason:
                    return name, reason
        return "guard", "a rule refused this step"


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
            text = str(value).strip()
            if spec.required and not text:
                raise ValueError("is required for this step")
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
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        if spec.type == "datetime":
            moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            if moment.tzinfo is None:  # a local time, as people type it
                moment = moment.replace(tzinfo=settings.time_zone)
            return moment
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


# -- loading and validation -------------------------------------------------------------


def _labels(raw: Any, key: str, where: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not {"et", "en"} <= raw.keys():
        raise WorkflowError(f"{where}: {key} needs an Estonian and an English text (et, en)")
    return {lang: str(raw[lang]) for lang in ("et", "en")}


def _emails(raw: Any, where: str, templates_dir: Path) -> tuple[Email, ...]:
    emails = []
    for index, item in enumerate(raw or []):
        key = f"{where}.emails[{index}]"
        template = item.get("template")
        to = tuple(item.get("to", []))
        if not template:
            raise WorkflowError(f"{key}: template is missing")
        if not to or set(to) - set(RECIPIENTS):
            raise WorkflowError(f"{key}.to: recipients must be some of {', '.join(RECIPIENTS)}")
        link = item.get("link")
        if link is not None and link not in LINK_ACTIONS:
            raise WorkflowError(f"{key}.link: must be one of {', '.join(LINK_ACTIONS)}")
        for lang in ("et", "en"):
            path = templates_dir / lang / f"{template}.txt"
            if not path.is_file():
                raise WorkflowError(
                    f"{key}.template: template '{template}' does not exist ({path})"
                )
            # A template that shows a link needs one, and a declared link must be shown.
            if ("{{ link }}" in path.read_text(encoding="utf-8")) != (link is not None):
                raise WorkflowError(
                    f"{key}.link: template {path} "
                    + (
                        "shows {{ link }} but no link is declared"
                        if link is None
                        else f"does not show the declared '{link}' link"
                    )
                )
        emails.append(Email(template, to, link, bool(item.get("calendar", False))))
    return tuple(emails)


def _fields(raw: Any, where: str) -> tuple[FieldSpec, ...]:
    specs = []
    for name, item in (raw or {}).items():
        kind = item.get("type")
        if kind not in FIELD_TYPES:
            raise WorkflowError(f"{where}.fields.{name}.type: must be one of {FIELD_TYPES}")
        choices = tuple(item.get("choices", ()))
        if kind == "choice" and not choices:
            raise WorkflowError(f"{where}.fields.{name}.choices: a choice needs its choices")
        specs.append(FieldSpec(name, kind, bool(item.get("required", True)), choices))
    return tuple(specs)


def _transition(
    raw: dict[str, Any], where: str, templates_dir: Path, *, registries: Registries
) -> TransitionSpec:
    trigger = raw.get("trigger")
    if not trigger:
        raise WorkflowError(f"{where}.trigger: is missing")
    roles = tuple(raw.get("roles", ()))
    if not roles:
        raise WorkflowError(f"{where}.roles: trigger '{trigger}' has no role that may fire it")
    for role in roles:
        if role not in ROLES:
            raise WorkflowError(f"{where}.roles: unknown role '{role}'")
    for guard in raw.get("guards", ()):
        if guard not in registries.guards:
            raise WorkflowError(f"{where}.guards: guard '{guard}' is not registered")
    effect = raw.get("effect")
    if effect and effect not in registries.effects:
        raise WorkflowError(f"{where}.effect: effect '{effect}' is not registered")
    sources = raw.get("source", ())
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    return TransitionSpec(
        trigger=trigger,
        sources=sources,
        dest=raw.get("dest"),
        roles=roles,
        guards=tuple(raw.get("guards", ())),
        overridable=bool(raw.get("overridable", False)),
        effect=effect,
        fields=_fields(raw.get("fields"), where),
        emails=_emails(raw.get("emails"), where, templates_dir),
        label=_labels(raw.get("label"), "label", where),
    )


@dataclass(frozen=True)
class Registries:
    guards: Mapping[str, Guard]
    effects: Mapping[str, Effect]
    anchors: Mapping[str, Anchor]


def load_workflow(path: Path, settings: Settings, registries: Registries) -> Workflow:
    """Read and validate one workflow file; any mistake raises WorkflowError naming its key."""
    where_file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise WorkflowError(f"{where_file}: {error}") from None
    name = raw.get("name") or path.stem
    templates = settings.templates_dir
    overrides = settings.timer_overrides.get(name, {})

    states: dict[str, StateSpec] = {}
    for state_name, item in (raw.get("states") or {}).items():
        where = f"{where_file}: states.{state_name}"
        timers = []
        for index, timer in enumerate(item.get("timers", [])):
            key = f"{where}.timers[{index}]"
            timer_name = timer.get("name")
            if not timer_name:
                raise WorkflowError(f"{key}.name: is missing")
            anchor = timer.get("anchor", "state_entry")
            if anchor != "state_entry" and anchor not in registries.anchors:
                raise WorkflowError(f"{key}.anchor: anchor '{anchor}' is not registered")
            cancel_when = timer.get("cancel_when")
            if cancel_when is not None and cancel_when not in registries.anchors:
                raise WorkflowError(f"{key}.cancel_when: anchor '{cancel_when}' is not registered")
            email = _emails([timer["email"]], key, templates)[0] if "email" in timer else None
            overdue = bool(timer.get("overdue", False))
            if [email is not None, timer.get("trigger") is not None, overdue].count(True) != 1:
                raise WorkflowError(
                    f"{key}: a timer sends an email, fires a trigger or marks the case overdue "
                    "(exactly one)"
                )
            try:
                after = overrides.get(state_name, {}).get(timer_name) or parse_duration(
                    str(timer.get("after", "")), key=f"{key}.after"
                )
            except ConfigError as error:
                raise WorkflowError(str(error)) from None
            timers.append(
                TimerSpec(
                    timer_name,
                    after,
                    anchor,
                    email,
                    timer.get("trigger"),
                    bool(timer.get("repeat", False)),
                    cancel_when,
                    overdue,
                )
            )
        action = item.get("action")
        states[state_name] = StateSpec(
            name=state_name,
            label=_labels(item.get("label"), "label", where),
            action=_labels(action, "action", where) if action else None,
            waits_for=item.get("waits_for"),
            terminal=bool(item.get("terminal", False)),
            emails=_emails(item.get("emails"), where, templates),
            timers=tuple(timers),
        )
    if not states:
        raise WorkflowError(f"{where_file}: states: a workflow needs states")
    if "start" not in raw:
        raise WorkflowError(f"{where_file}: start: how a case starts is missing")
    start = _transition(raw["start"], f"{where_file}: start", templates, registries=registries)
    transitions = [
        _transition(item, f"{where_file}: transitions[{index}]", templates, registries=registries)
        for index, item in enumerate(raw.get("transitions", []))
    ]
    workflow = Workflow(
        name,
        path,
        _labels(raw.get("label"), "label", where_file),
        states,
        start,
        transitions,
        registries,
    )
    _check_graph(workflow)
    workflow.machine = _build_machine(workflow)
    return workflow


def _check_graph(workflow: Workflow) -> None:
    where = str(workflow.path)
    if workflow.start.dest not in workflow.states:
        raise WorkflowError(f"{where}: start.dest: unknown state '{workflow.start.dest}'")
    for index, spec in enumerate(workflow.transitions):
        key = f"{where}: transitions[{index}]"
        if not spec.sources:
            raise WorkflowError(f"{key}.source: trigger '{spec.trigger}' has no source state")
        for state in (*spec.sources, spec.dest):
            if state is not None and state not in workflow.states:
                raise WorkflowError(f"{key}: unknown state '{state}' (trigger '{spec.trigger}')")
        for state in spec.sources:
            if workflow.states[state].terminal and spec.dest is not None:
                raise WorkflowError(f"{key}.source: terminal state '{state}' cannot be left")
    for spec_state in workflow.states.values():
        for timer in spec_state.timers:
            if timer.trigger and not any(
                t.trigger == timer.trigger and spec_state.name in t.sources and "system" in t.roles
                for t in workflow.transitions
            ):
                raise WorkflowError(
                    f"{where}: states.{spec_state.name}.timers.{timer.name}.trigger: "
                    f"'{timer.trigger}' is not a system transition from '{spec_state.name}'"
                )
            if spec_state.terminal:
                raise WorkflowError(
                    f"{where}: states.{spec_state.name}.timers: a terminal state starts no timers"
                )
    reached = {workflow.start.dest}
    frontier = [workflow.start.dest]
    while frontier:
        current = frontier.pop()
        for spec in workflow.transitions_from(current):
            if spec.dest and spec.dest not in reached:
                reached.add(spec.dest)
                frontier.append(spec.dest)
    for state in workflow.states:
        if state not in reached:
            raise WorkflowError(f"{where}: states.{state}: unreachable from the start")


def _build_machine(workflow: Workflow) -> Machine:
    """One machine per workflow with no model attached: cases are passed to each trigger."""

    def condition(spec: TransitionSpec) -> Callable[[Any], bool]:
        def passes(event: Any) -> bool:
            ctx: Context = event.kwargs["ctx"]
            if spec.overridable and ctx.override_reason:
                return True
            guards = workflow.registries.guards
            return all(guards[name](ctx) is None for name in spec.guards)

        return passes

    return Machine(
        model=None,
        states=list(workflow.states),
        initial=workflow.start.dest,
        transitions=[
            {
                "trigger": spec.trigger,
                "source": list(spec.sources),
                "dest": spec.dest,
                "conditions": [condition(spec)],
            }
            for spec in workflow.transitions
        ],
        auto_transitions=False,
        send_event=True,
    )


def load_workflows(settings: Settings, registries: Registries) -> dict[str, Workflow]:
    """Load every workflow file in settings.workflows_dir, keyed by workflow name."""
    workflows = {}
    for path in sorted(settings.workflows_dir.glob("*.toml")):
        workflow = load_workflow(path, settings, registries)
        workflows[workflow.name] = workflow
    return workflows
