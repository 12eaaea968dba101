"""What must hold at the end of a run, read from the whole database and the sink's record.

- Every case's state is the replay of its audit trail: the events chain (each starts where
  the last ended), each is a transition its workflow declares for the role that took it,
  the last ends in the case's state, the version counts the steps and the entry event is
  the last that moved the case.
- No transition is half-applied: every event has all the emails its step and the state it
  entered declare, every state entry has its timers, and every timer and email points at
  an event of its own case.
- Timers fire once: no two fired rows for one timer, a fired timer's step taken exactly
  once (system events = fired step timers), its email queued, no due timer left behind.
- Delivery: every outbox row sent, every sent Message-ID at the sink, nothing at the sink
  that is not in the outbox, and copies beyond the first within the in-flight bound.
- Every step the service confirmed to a caller is in the audit trail.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.store.models import AuditEvent, Case, OutboxMessage, Timer
from lifecycle.workflows.spec import TransitionSpec, Workflow
from tests.reliability.load import Ack

# A due timer is fired at the next tick of a worker's timer job (every 30 s), plus its run.
TIMER_SLACK = timedelta(seconds=40)


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:  # the first ones tell the story
            self.problems.append(text)


def verify(
    app: App,
    *,
    received: list[dict[str, Any]],
    acks: list[Ack],
    allowed_duplicates: int,
    checked_at: datetime,
) -> Verdict:
    verdict = Verdict()
    with app.sessions() as session:
        cases = {case.id: case for case in session.scalars(select(Case))}
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
        timers = list(session.scalars(select(Timer).order_by(Timer.id)))
        mail = list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))
    trails: dict[int, list[AuditEvent]] = defaultdict(list)
    for event in events:
        trails[event.case_id].append(event)
    _replay(verdict, app.workflows, cases, trails)
    _emails(verdict, app.workflows, cases, events, mail)
    _timers(verdict, app.workflows, cases, trails, timers, mail, checked_at)
    _delivery(verdict, mail, received, allowed_duplicates)
    _acknowledged(verdict, cases, trails, acks)
    verdict.figures.update(
        cases=len(cases),
        events=len(events),
        states=dict(Counter(f"{c.workflow}:{c.state}" for c in cases.values())),
    )
    return verdict


def _step(workflow: Workflow, event: AuditEvent) -> TransitionSpec | None:
    """The declared transition this event took, if there is one."""
    if event.from_state is None:
        start = workflow.start
        fits = event.trigger == start.trigger and event.to_state == start.dest
        return start if fits else None
    for spec in workflow.transitions:
        if (
            spec.trigger == event.trigger
            and event.from_state in spec.sources
            and (spec.dest or event.from_state) == event.to_state
        ):
            return spec
    return None


def _replay(
    verdict: Verdict,
    workflows: dict[str, Workflow],
    cases: dict[int, Case],
    trails: dict[int, list[AuditEvent]],
) -> None:
    for case in cases.values():
        trail, workflow = trails.get(case.id, []), workflows[case.workflow]
        if not trail:
            verdict.problem(f"{case.ref}: no audit trail")
            continue
        state: str | None = None
        entry = None
        for event in trail:
            spec = _step(workflow, event)
            if event.from_state != state:
                verdict.problem(
                    f"{case.ref}: event {event.id} starts in {event.from_state}, not {state}"
                )
            if spec is None or event.actor_role not in spec.roles:
                verdict.problem(
                    f"{case.ref}: event {event.id} {event.trigger} {event.from_state}->"
                    f"{event.to_state} by {event.actor_role} is no declared transition"
                )
            if event.from_state != event.to_state:
                entry = event.id
            state = event.to_state
        if state != case.state:
            verdict.problem(f"{case.ref}: state {case.state}, but its trail replays to {state}")
        if case.version != len(trail):
            verdict.problem(f"{case.ref}: version {case.version} after {len(trail)} steps")
        if case.entry_event_id != entry:
            verdict.problem(f"{case.ref}: entry event {case.entry_event_id}, trail says {entry}")


def _emails(
    verdict: Verdict,
    workflows: dict[str, Workflow],
    cases: dict[int, Case],
    events: list[AuditEvent],
    mail: list[OutboxMessage],
) -> None:
    by_event: dict[int, set[str]] = defaultdict(set)
    event_case = {event.id: event.case_id for event in events}
    for message in mail:
        if message.event_id is None:
            continue
        by_event[message.event_id].add(message.template)
        if event_case.get(message.event_id) != message.case_id:
            verdict.problem(f"outbox {message.id}: event {message.event_id} is not of its case")
    for event in events:
        workflow = workflows[cases[event.case_id].workflow]
        spec = _step(workflow, event)
        if spec is None:
            continue  # a replay problem already
        expected = {email.template for email in spec.emails}
        if event.from_state != event.to_state:
            expected |= {email.template for email in workflow.state(event.to_state).emails}
        if by_event[event.id] != expected:
            verdict.problem(
                f"event {event.id} ({event.trigger}): emails {sorted(by_event[event.id])}, "
                f"its step declares {sorted(expected)}"
            )


def _timers(
    verdict: Verdict,
    workflows: dict[str, Workflow],
    cases: dict[int, Case],
    trails: dict[int, list[AuditEvent]],
    timers: list[Timer],
    mail: list[OutboxMessage],
    checked_at: datetime,
) -> None:
    events = {event.id: event for trail in trails.values() for event in trail}
    queued = Counter(
        message.idempotency_key.split(":")[1]
        for message in mail
        if message.idempotency_key.startswith("timer:")
    )
    made: set[tuple[int, str]] = set()
    fired: Counter[tuple[int, int, str, datetime]] = Counter()
    step_timers: Counter[int] = Counter()
    for timer in timers:
        case = cases[timer.case_id]
        entry = events.get(timer.entry_event_id)
        if entry is None or entry.case_id != timer.case_id or entry.to_state != timer.state:
            verdict.problem(f"timer {timer.id}: its entry event is not an entry into {timer.state}")
        made.add((timer.entry_event_id, timer.name))
        spec = next(
            (t for t in workflows[case.workflow].state(timer.state).timers if t.name == timer.name),
            None,
        )
        if spec is None:
            verdict.problem(f"timer {timer.id}: {timer.state} declares no timer {timer.name}")
            continue
        if timer.status == "pending":
            if timer.entry_event_id != case.entry_event_id:
                verdict.problem(f"timer {timer.id}: pending, but {case.ref} left that state")
            if timer.due_at < checked_at - TIMER_SLACK:
                verdict.problem(f"timer {timer.id} ({timer.name}) due {timer.due_at}, never fired")
        if timer.status != "fired":
            if str(timer.id) in queued:
                verdict.problem(f"timer {timer.id}: {timer.status}, yet its email was queued")
            continue
        fired[(timer.case_id, timer.entry_event_id, timer.name, timer.due_at)] += 1
        if spec.trigger is not None:
            step_timers[timer.case_id] += 1
        if spec.email is not None and not queued[str(timer.id)]:
            verdict.problem(f"timer {timer.id} ({timer.name}) fired without its email")
    for key, count in fired.items():
        if count > 1:
            verdict.problem(f"timer {key[2]} of case {key[0]} fired {count} times")
    system_steps = Counter(
        event.case_id for event in events.values() if event.actor_role == "system"
    )
    if system_steps != step_timers:
        verdict.problem(
            f"system steps {dict(system_steps)} != fired step timers {dict(step_timers)}"
        )
    for event in events.values():
        if event.from_state == event.to_state:
            continue
        case = cases[event.case_id]
        for spec in workflows[case.workflow].state(event.to_state).timers:
            plain = spec.anchor == "state_entry" and spec.cancel_when is None
            if plain and (event.id, spec.name) not in made:
                verdict.problem(
                    f"event {event.id} entered {event.to_state} without timer {spec.name}"
                )
    verdict.figures["timers_fired"] = dict(Counter(t.name for t in timers if t.status == "fired"))
    verdict.figures["timers_pending"] = sum(1 for t in timers if t.status == "pending")


def _delivery(
    verdict: Verdict,
    mail: list[OutboxMessage],
    received: list[dict[str, Any]],
    allowed_duplicates: int,
) -> None:
    copies = Counter(str(message["message_id"]) for message in received)
    ours = {message.message_id for message in mail}
    status = Counter(message.status for message in mail)
    for message in mail:
        if message.status != "sent":
            verdict.problem(f"outbox {message.id} ({message.template}) is {message.status}")
        elif message.message_id not in copies:
            verdict.problem(f"outbox {message.id} ({message.template}) sent but never arrived")
    strangers = set(copies) - ours
    if strangers:
        verdict.problem(f"{len(strangers)} messages at the sink that no outbox row sent")
    duplicates = sum(count - 1 for count in copies.values())
    if duplicates > allowed_duplicates:
        verdict.problem(f"{duplicates} duplicate copies, more than the bound {allowed_duplicates}")
    timer_ids = {m.message_id for m in mail if m.idempotency_key.startswith("timer:")}
    verdict.figures.update(
        outbox=dict(status),
        arrived=len(received),
        duplicates=duplicates,
        duplicate_timer_emails=sum(copies[m] - 1 for m in timer_ids if copies[m] > 1),
    )


def _acknowledged(
    verdict: Verdict,
    cases: dict[int, Case],
    trails: dict[int, list[AuditEvent]],
    acks: list[Ack],
) -> None:
    recorded = Counter(
        (case.ref, event.trigger) for case in cases.values() for event in trails.get(case.id, [])
    )
    confirmed = Counter((ack.ref, ack.trigger) for ack in acks)
    for (ref, trigger), count in confirmed.items():
        if recorded[(ref, trigger)] < count:
            verdict.problem(
                f"{ref}: {trigger} was confirmed {count}x, recorded {recorded[(ref, trigger)]}x"
            )
    verdict.figures["confirmed_steps"] = sum(confirmed.values())
