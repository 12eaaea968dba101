"""Random steps on both workflows keep every case consistent: state, audit trail, timers, outbox.

A hypothesis state machine fires any trigger of a case's workflow (allowed or not), as anyone
(coordinator, committee member, the case's own people, a stranger, the system), with plausible
or missing values, while the clock moves and new requests and applications arrive. After every
step the invariants are read back from a real SQLite file.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases import services
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import Conflict, InvalidInput, NotFound, Refused
from lifecycle.store.models import (
    APPLICATION,
    MENTORING,
    TOPICS,
    AuditEvent,
    Case,
    OutboxMessage,
    Person,
    Timer,
)
from lifecycle.workflows.engine import parse_ref
from lifecycle.workflows.spec import FieldSpec
from tests.conftest import COMMITTEE, COORDINATOR, START, bring, list_mentor

# The errors a caller is shown; each must leave the database exactly as it was.
EXPLAINED = (Refused, InvalidInput, NotFound, Conflict)

STRANGER = "voras.inimene@example.org"
MENTORS = ["mari.maasikas@example.org", "peeter.puu@example.org", "kadri.kask@example.org"]
# Applications on the way, and the state each is brought to ("scheduled": an interview is set).
APPLICATIONS = {
    "anne.aas@example.org": "submitted",
    "jaan.jogi@example.org": "submitted",
    "tiina.tamm@example.org": "eligibility",
    "urmas.uus@example.org": "awaiting_info",
    "vilja.vaher@example.org": "interview",
    "aivar.allik@example.org": "scheduled",
}
APPLICANTS = list(APPLICATIONS)
# Mentees with a relation: (mentor, the state it is brought to).
RELATIONS = {
    "ene.ees@example.org": (MENTORS[0], "requested"),
    "olev.oja@example.org": (MENTORS[1], "first_meeting"),
    "maie.mets@example.org": (MENTORS[2], "active"),
    "rein.raud@example.org": (MENTORS[2], "agreement"),  # the third mentor is now full
}
# Works where the first mentor does, and has asked no one yet.
SAME_ORGANISATION = "siim.sepp@example.org"
MENTEES = [*RELATIONS, SAME_ORGANISATION]
NEW_PEOPLE = ["uus.inimene@example.org", "teine.uus@example.org"]

# Most steps happen at once, some after hours, some after the days a timer waits.
WAITS = st.one_of(
    st.just(timedelta(0)),
    st.integers(1, 72).map(lambda hours: timedelta(hours=hours)),
    st.sampled_from([3, 7, 10, 14, 30, 365]).map(lambda days: timedelta(days=days)),
)

STEP_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class CaseRef:
    """A case the machine knows, with the emails of its own people by role."""

    ref: str
    workflow: str
    parties: dict[str, str]

    @property
    def id(self) -> int:
        return parse_ref(self.ref)[1]


@dataclass
class World:
    """The populated database every example starts from, and what is in it."""

    path: Path
    now: datetime
    cases: list[CaseRef] = field(default_factory=list)


# -- the world every example starts from ---------------------------------------------------


def _populate(app: App, clock: ManualClock) -> list[CaseRef]:
    """Staff, three listed mentors, applications on the way, mentees with relations."""
    scenarios.add_staff(app, name="Liis Lepik", email=COORDINATOR, role="coordinator")
    for index, email in enumerate(COMMITTEE):
        scenarios.add_staff(app, name=f"Komisjoniliige {index + 1}", email=email, role="committee")
    with app.unit() as tx:
        services.upsert_person(tx, {"name": "Võõras Inimene", "email": STRANGER})

    cases: list[CaseRef] = []
    mentor_overrides: list[dict[str, Any]] = [
        {"capacity": 1},  # full after one accepted request
        {"organisation": "Viljandi Haigla", "degree_level": "bachelor"},  # no manager mentees
        {"organisation": "Narva Perekeskus", "topics": ["specific_situation", "career"]},
    ]
    for index, (email, overrides) in enumerate(zip(MENTORS, mentor_overrides, strict=True)):
        ref = list_mentor(app, clock, email, f"Mentor {index + 1}", **overrides)
        cases.append(CaseRef(ref, APPLICATION, {"applicant": email}))
    for email, state in APPLICATIONS.items():
        ref = scenarios.submit_application(
            app, scenarios.applicant(email, "Kandidaat"), actor=COORDINATOR
        )
        bring(app, clock, ref, "interview" if state == "scheduled" else state, email)
        if state == "scheduled":
            scenarios.step(
                app,
                ref,
                "schedule_interview",
                COORDINATOR,
                interview_at=clock.now + timedelta(days=1),
                place="videokõne",
                committee=COMMITTEE,
            )
        cases.append(CaseRef(ref, APPLICATION, {"applicant": email}))

    for mentee, (mentor, state) in RELATIONS.items():
        ref = scenarios.submit_request(app, scenarios.mentee(mentee, "Mentii", mentor))
        scenarios.bring_relation(app, clock, ref, state, mentor=mentor, mentee_email=mentee)
        cases.append(CaseRef(ref, MENTORING, {"mentor": mentor, "mentee": mentee}))
    with app.unit() as tx:
        services.upsert_person(
            tx,
            scenarios.mentee(
                SAME_ORGANISATION, "Mentii", MENTORS[0], organisation="Tartu Linnavalitsus"
            ),
        )
    return cases


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[World]:
    """Built once through the real steps; each example works on its own copy of the file."""
    path = tmp_path_factory.mktemp("world") / "mentorlus.db"
    shutil.copyfile(sqlite_template, path)
    clock = ManualClock(START)
    app = bootstrap.build(
        replace(load_settings(environ={}), database_url=f"sqlite:///{path}"), clock=clock
    )
    cases = _populate(app, clock)
    app.engine.dispose()  # the last connection closing folds the WAL into the file
    assert not path.with_name(path.name + "-wal").exists()
    yield World(path, clock.now + timedelta(hours=1), cases)


# -- plausible values -------------------------------------------------------------------------


def _value(spec: FieldSpec, now: datetime) -> st.SearchStrategy[Any]:
    if spec.type == "text":
        return st.sampled_from(["x", "Palun saatke diplomi koopia.", "x", " "])
    if spec.type == "datetime":
        return st.integers(-72, 240).map(lambda hours: now + timedelta(hours=hours))
    if spec.type == "date":
        return st.integers(-30, 400).map(lambda days: now.date() + timedelta(days=days))
    if spec.type == "choice":
        return st.sampled_from([*spec.choices, *spec.choices, "muu"])
    if spec.type == "email_list":
        return st.sampled_from(
            [
                COMMITTEE,
                COMMITTEE,
                COMMITTEE[:2],
                [COORDINATOR, *COMMITTEE[:2]],
                [*COMMITTEE, STRANGER],
            ]
        )
    if spec.type == "bool":
        return st.sampled_from([True, True, False])
    if spec.type == "int":
        return st.sampled_from([1, 2, 3, 4, 5, 0, 6])
    raise AssertionError(spec.type)


def _values(fields: tuple[FieldSpec, ...], now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    """Every field the step takes, each one sometimes missing; sometimes nothing at all."""
    present = st.fixed_dictionaries({spec.name: _value(spec, now) for spec in fields})
    some = st.fixed_dictionaries({}, optional={spec.name: _value(spec, now) for spec in fields})
    return st.one_of(present, present, some, st.just({}))


# -- reading the database ---------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Everything a step on one case may change, plus the totals a refusal must not change."""

    version: int
    state: str
    updated_at: datetime
    events: int
    timers: tuple[tuple[int, str], ...]
    outbox: int
    cases: int
    people: int


def _snapshot(app: App, case_id: int) -> Snapshot:
    def count(model: Any, *where: Any) -> Any:
        return select(func.count()).select_from(model).where(*where).scalar_subquery()

    with app.unit() as tx:
        row = tx.session.execute(
            select(
                Case.version,
                Case.state,
                Case.updated_at,
                count(AuditEvent, AuditEvent.case_id == case_id),
                count(OutboxMessage, OutboxMessage.case_id == case_id),
                count(Case),
                count(Person),
            ).where(Case.id == case_id)
        ).one()
        timers = tx.session.execute(
            select(Timer.id, Timer.status).where(Timer.case_id == case_id).order_by(Timer.id)
        ).all()
    version, state, updated_at, events, outbox, cases, people = row
    return Snapshot(
        version=version,
        state=state,
        updated_at=updated_at,
        events=events,
        timers=tuple((timer.id, timer.status) for timer in timers),
        outbox=outbox,
        cases=cases,
        people=people,
    )


def _totals(app: App) -> tuple[int, ...]:
    """How many cases, audit events, emails, people and timers there are."""
    with app.unit() as tx:
        return tuple(
            tx.session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Case, AuditEvent, OutboxMessage, Person, Timer)
        )


# -- the machine ------------------------------------------------------------------------------


class CaseSteps(RuleBasedStateMachine):
    """Any trigger, any actor, any time; the invariants hold after every step."""

    def __init__(self, world: World, root: Path) -> None:
        super().__init__()
        folder = Path(tempfile.mkdtemp(dir=root))
        self.folder = folder
        shutil.copyfile(world.path, folder / "mentorlus.db")
        self.clock = ManualClock(world.now)
        self.app = bootstrap.build(
            replace(load_settings(environ={}), database_url=f"sqlite:///{folder / 'mentorlus.db'}"),
            clock=self.clock,
        )
        self.cases = list(world.cases)
        # The version each case had after its last step: no other step may change it.
        with self.app.unit() as tx:
            self.versions = dict(tx.session.execute(select(Case.id, Case.version)).all())

    def teardown(self) -> None:
        self.app.engine.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- who acts ---------------------------------------------------------------------------

    def _anyone(self, case: CaseRef) -> list[str | None]:
        return [COORDINATOR, *COMMITTEE, *case.parties.values(), STRANGER, None]

    def _holders(self, case: CaseRef, roles: set[str]) -> list[str | None]:
        """The people who may hold one of these roles on this case."""
        actors: list[str | None] = []
        for role in sorted(roles):
            if role == "coordinator":
                actors.append(COORDINATOR)
            elif role == "committee":
                actors.extend(COMMITTEE)
            elif role == "system":
                actors.append(None)
            elif role in case.parties:
                actors.append(case.parties[role])
        return actors or self._anyone(case)

    # -- rules ------------------------------------------------------------------------------

    @rule(wait=WAITS, data=st.data())
    def fire_a_trigger(self, wait: timedelta, data: st.DataObject) -> None:
        self.clock.now += wait
        kind = data.draw(st.sampled_from([MENTORING, APPLICATION]), label="workflow")
        refs = [case.ref for case in self.cases if case.workflow == kind]
        ref = data.draw(st.sampled_from(refs), label="case")
        case = next(known for known in self.cases if known.ref == ref)
        workflow = self.app.workflows[case.workflow]
        before = _snapshot(self.app, case.id)
        possible = sorted({t.trigger for t in workflow.transitions_from(before.state)})
        aim = data.draw(st.sampled_from([True, True, True, False]), label="aim at a possible step")
        if possible and aim:
            trigger = data.draw(st.sampled_from(possible), label="trigger")
            roles = {
                role
                for spec in workflow.transitions_from(before.state)
                if spec.trigger == trigger
                for role in spec.roles
            }
            actor = data.draw(st.sampled_from(self._holders(case, roles)), label="actor")
        else:
            triggers = sorted({t.trigger for t in workflow.transitions})
            trigger = data.draw(st.sampled_from(triggers), label="trigger")
            actor = data.draw(st.sampled_from(self._anyone(case)), label="actor")
        fields = next(t for t in workflow.transitions if t.trigger == trigger).fields
        values = data.draw(_values(fields, self.clock.now), label="values")
        try:
            with self.app.unit() as tx:
                recorded = services.advance_case(
                    tx, ref=case.ref, trigger=trigger, actor_email=actor, values=values
                )
                moved = (recorded.trigger, recorded.from_state, recorded.to_state)
        except EXPLAINED as error:
            event(f"refused: {type(error).__name__} {getattr(error, 'rule', '')}")
            after = _snapshot(self.app, case.id)
            assert after == before, f"a refused '{trigger}' changed {case.ref}"
            return
        event(f"{case.workflow}: {trigger} → {moved[2]}")  # --hypothesis-show-statistics
        after = _snapshot(self.app, case.id)
        assert moved == (trigger, before.state, after.state)
        assert after.events == before.events + 1, "a step writes exactly one audit event"
        assert after.updated_at == self.clock.now
        assert after.version == before.version + 1, f"'{trigger}' did not bump the version"
        self.versions[case.id] = after.version

    @rule(
        workflow=st.sampled_from([MENTORING, MENTORING, APPLICATION]),
        person=st.sampled_from([*MENTEES, *NEW_PEOPLE, *APPLICANTS, MENTORS[0]]),
        mentor=st.sampled_from([*MENTORS, APPLICANTS[0], STRANGER]),
        topic=st.sampled_from(["career", *TOPICS]),
        is_manager=st.booleans(),
        by_coordinator=st.booleans(),
    )
    def a_new_case_arrives(
        self,
        workflow: str,
        person: str,
        mentor: str,
        topic: str,
        is_manager: bool,
        by_coordinator: bool,
    ) -> None:
        """A mentee asks a mentor, or someone applies to be a mentor: accepted or refused."""
        actor = COORDINATOR if by_coordinator else None
        before = _totals(self.app)
        try:
            with self.app.unit() as tx:
                if workflow == MENTORING:
                    data = scenarios.mentee(person, "Mentii", mentor, topic=topic)
                    data["is_manager"] = is_manager
                    if person == SAME_ORGANISATION:
                        data["organisation"] = "Tartu Linnavalitsus"
                    case = services.submit_request(tx, data=data, actor_email=actor)
                    parties = {"mentor": mentor, "mentee": person}
                else:
                    data = scenarios.applicant(person, "Kandidaat")
                    case = services.submit_application(tx, data=data, actor_email=actor)
                    parties = {"applicant": person}
                opened = CaseRef(case.ref, workflow, parties)
        except EXPLAINED as error:
            event(f"{workflow} refused: {type(error).__name__} {getattr(error, 'rule', '')}")
            assert _totals(self.app) == before, f"a refused {workflow} case changed the database"
            return
        event(f"{workflow}: opened")
        self.cases.append(opened)
        self.versions[opened.id] = _snapshot(self.app, opened.id).version

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def every_case_is_in_a_declared_state(self) -> None:
        with self.app.unit() as tx:
            for case in tx.session.scalars(select(Case)):
                assert case.state in self.app.workflows[case.workflow].states, case.ref

    @invariant()
    def the_audit_trail_replays_to_the_current_state(self) -> None:
        with self.app.unit() as tx:
            cases = tx.session.scalars(select(Case)).all()
            trails: dict[int, list[AuditEvent]] = {case.id: [] for case in cases}
            for step in tx.session.scalars(select(AuditEvent).order_by(AuditEvent.id)):
                trails[step.case_id].append(step)
        for case in cases:
            assert trails[case.id], f"{case.ref} has no audit event"
            state: str | None = None
            entry_event_id = None
            for step in trails[case.id]:
                assert step.from_state == state, (
                    f"{case.ref}: event {step.id} ({step.trigger}) starts from "
                    f"{step.from_state!r}, the trail was at {state!r}"
                )
                if step.to_state != state:
                    entry_event_id = step.id
                state = step.to_state
            assert state == case.state, f"{case.ref}: trail ends at {state}, case is {case.state}"
            assert case.entry_event_id == entry_event_id, (
                f"{case.ref}: entry event {case.entry_event_id}, "
                f"the trail entered its state at {entry_event_id}"
            )

    @invariant()
    def pending_timers_belong_to_the_current_state_entry(self) -> None:
        with self.app.unit() as tx:
            rows = tx.session.execute(
                select(Timer, Case)
                .join(Case, Timer.case_id == Case.id)
                .where(Timer.status == "pending")
            ).all()
            for timer, case in rows:
                assert timer.state == case.state, (
                    f"{case.ref} is '{case.state}' but timer {timer.name} of '{timer.state}' waits"
                )
                assert timer.entry_event_id == case.entry_event_id, (
                    f"{case.ref}: timer {timer.name} belongs to entry {timer.entry_event_id}, "
                    f"the case entered its state at {case.entry_event_id}"
                )

    @invariant()
    def terminal_cases_wait_for_no_timer(self) -> None:
        with self.app.unit() as tx:
            rows = tx.session.execute(
                select(Case, Timer.name)
                .join(Timer, Timer.case_id == Case.id)
                .where(Timer.status == "pending")
            ).all()
        for case, name in rows:
            state = self.app.workflows[case.workflow].state(case.state)
            assert not state.terminal, f"{case.ref} is '{case.state}' but waits for {name}"

    @invariant()
    def every_step_bumps_the_version_of_its_own_case_once(self) -> None:
        with self.app.unit() as tx:
            rows = tx.session.execute(
                select(Case.id, Case.version, func.count(AuditEvent.id))
                .join(AuditEvent, AuditEvent.case_id == Case.id)
                .group_by(Case.id, Case.version)
            ).all()
        for case_id, version, events in rows:
            assert version == events, f"case {case_id}: version {version}, {events} audit events"
        assert {row[0]: row[1] for row in rows} == self.versions, "a step bumped another case"

    @invariant()
    def every_email_is_queued_once_for_a_step_of_its_case(self) -> None:
        with self.app.unit() as tx:
            rows = tx.session.execute(
                select(OutboxMessage.idempotency_key, OutboxMessage.case_id, AuditEvent.case_id)
                .select_from(OutboxMessage)
                .outerjoin(AuditEvent, OutboxMessage.event_id == AuditEvent.id)
                .where(OutboxMessage.case_id.is_not(None))
            ).all()
            keys = tx.session.scalars(select(OutboxMessage.idempotency_key)).all()
            events = {
                (row.id, row.case_id)
                for row in tx.session.execute(select(AuditEvent.id, AuditEvent.case_id))
            }
        assert len(keys) == len(set(keys)), "an idempotency key is used twice"
        for key, case_id, event_case_id in rows:
            assert event_case_id == case_id, f"{key}: its event is not a step of case {case_id}"
            key_case, key_event, *_ = key.split(":")
            assert key_case == str(case_id), f"{key} names another case than {case_id}"
            assert (int(key_event), case_id) in events, f"{key} names no step of case {case_id}"


def test_random_steps_keep_state_audit_trail_timers_and_outbox_consistent(
    world: World, tmp_path: Path
) -> None:
    run_state_machine_as_test(lambda: CaseSteps(world, tmp_path), settings=STEP_SETTINGS)


# -- a timer bug found while writing the machine, pinned down -------------------------------


def _application_in(app: App, clock: ManualClock, state: str) -> str:
    email = APPLICANTS[0]
    ref = scenarios.submit_application(
        app, scenarios.applicant(email, "Kandidaat"), actor=COORDINATOR
    )
    bring(app, clock, ref, state, email)
    return ref


def test_rescheduling_the_interview_back_keeps_its_reminders_pending(
    app: App, clock: ManualClock
) -> None:
    ref = _application_in(app, clock, "interview")
    first, second = clock.now + timedelta(days=5), clock.now + timedelta(days=6)
    for interview_at in (first, second, first):
        clock.advance(hours=1)
        scenarios.step(
            app,
            ref,
            "schedule_interview",
            COORDINATOR,
            interview_at=interview_at,
            place="Tallinn, Lastekodu 12",
            committee=COMMITTEE,
        )
    with app.unit() as tx:
        pending = tx.session.execute(
            select(Timer.name, Timer.due_at).where(
                Timer.case_id == parse_ref(ref)[1], Timer.status == "pending"
            )
        ).all()
    assert sorted(pending) == [
        ("decision_overdue", first + timedelta(days=7)),
        ("interview_reminder", first - timedelta(days=2)),
    ]
