"""Load the workflow files, validate them, and build one transitions machine per workflow.

Any mistake raises WorkflowError naming the file and the key: an unknown or unreachable
state, an unregistered guard, effect or anchor, a trigger without a role, a template that
does not exist or does not show the link its declaration names.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transitions import Machine

from lifecycle.config import ConfigError, Settings, parse_duration
from lifecycle.workflows.spec import (
    LINK_ACTIONS,
    RECIPIENTS,
    ROLES,
    Context,
    Email,
    Registries,
    StateSpec,
    TimerSpec,
    TransitionSpec,
    Workflow,
    WorkflowError,
)
from lifecycle.workflows.stepdata import (
    FIELD_TYPES,
    INT_MAX,
    MAX_ITEMS,
    MAX_TEXT,
    TYPE_KEYS,
    FieldSpec,
)


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
        key = f"{where}.fields.{name}"
        kind = item.get("type")
        if kind not in FIELD_TYPES:
            raise WorkflowError(f"{key}.type: must be one of {FIELD_TYPES}")
        takes = ("required", *TYPE_KEYS[kind])
        extra = sorted(set(item) - {"type", *takes})
        if extra:
            raise WorkflowError(
                f"{key}.{extra[0]}: a {kind} field declares no {extra[0]} (only {', '.join(takes)})"
            )
        choices = tuple(item.get("choices", ()))
        if kind == "choice" and not (choices and all(isinstance(c, str) for c in choices)):
            raise WorkflowError(f"{key}.choices: a choice needs its choices, as texts")
        minimum = _bound(item, "minimum", FieldSpec.minimum, key, lowest=-INT_MAX, highest=INT_MAX)
        specs.append(
            FieldSpec(
                name,
                kind,
                bool(item.get("required", True)),
                choices,
                max_length=_bound(item, "max_length", FieldSpec.max_length, key, highest=MAX_TEXT),
                minimum=minimum,
                maximum=_bound(
                    item, "maximum", FieldSpec.maximum, key, lowest=minimum, highest=INT_MAX
                ),
                max_items=_bound(item, "max_items", FieldSpec.max_items, key, highest=MAX_ITEMS),
            )
        )
    return tuple(specs)


SIZES = ("max_length", "max_items")  # bounds of how much a field takes, not of its value


def _bound(
    item: dict[str, Any], name: str, default: int, key: str, *, lowest: int = 1, highest: int
) -> int:
    """A bound a field declares: a whole number every caller, and a column, can hold."""
    value = item.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        least = "a positive number" if name in SIZES else f"a whole number from {lowest}"
        raise WorkflowError(f"{key}.{name}: must be {least} up to {highest}")
    return value


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
