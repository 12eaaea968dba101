"""Every field of every step is typed and bounded by its workflow file, whoever sends it.

The walk takes every transition of every workflow file, brings a case to one of its source
states through the real steps, and feeds each declared field a value of the wrong type, a
nested value, an oversized value and — where the field is required — no value, the other
fields valid. Each goes through the service, the CLI (`case advance --data`) and, where a
coordinator may take the step, the JSON API with a coordinator's token. Every answer names the
field: an InvalidInput, one line on stderr with exit 1, a 422 — never a traceback or a 500 —
and the case is left as it was. A step that declares no field refuses one it does not take.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from lifecycle.bootstrap import REGISTRIES, App
from lifecycle.cases import services, tokens
from lifecycle.cli.main import main
from lifecycle.config import Settings, load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import InvalidInput
from lifecycle.store.models import AuditEvent, Feedback
from lifecycle.web.app import create
from lifecycle.workflows.engine import load_case
from lifecycle.workflows.loader import load_workflows
from lifecycle.workflows.spec import TransitionSpec, WorkflowError
from lifecycle.workflows.stepdata import FIELD_TYPES, FieldSpec
from tests.conftest import COMMITTEE, COORDINATOR, bring, list_mentor
from tests.test_workflow_loader import _broken

APPLICANT = "anne.aas@example.org"
MENTOR = "mari.mets@example.org"
MENTEE = "jaan.jogi@example.org"
# Who takes a step, of the roles it allows: a coordinator where one may (the API is theirs).
ACTORS = {
    "coordinator": COORDINATOR,
    "mentee": MENTEE,
    "mentor": MENTOR,
    "applicant": APPLICANT,
    "committee": COMMITTEE[0],
    "system": None,
}
WORKFLOWS = load_workflows(load_settings(environ={}), REGISTRIES)
TRANSITIONS = [
    (name, index, spec)
    for name, workflow in sorted(WORKFLOWS.items())
    for index, spec in enumerate(workflow.transitions)
]


# -- what each field is fed ---------------------------------------------------------------------


def valid(spec: FieldSpec) -> Any:
    """A value the field takes, as JSON spells it."""
    return {
        "text": "Sobiv tekst",
        "datetime": "2026-10-01T14:00",
        "date": "2026-10-01",
        "int": max(spec.minimum, 1),
        "bool": True,
        "choice": spec.choices[0] if spec.choices else "",
        "email_list": list(COMMITTEE),
    }[spec.type]


def wrong(spec: FieldSpec) -> list[tuple[str, Any]]:
    """(what it is, the value): wrong types, a nested value, an oversized value."""
    wrong_types: dict[str, list[Any]] = {
        "text": [12345, True, ["a list"]],
        "datetime": [1790000000, "next tuesday", False],
        "date": [20261001, "1.10.2026", 2026.1],
        "int": [True, 4.5, 4.0, "4.5", "four"],
        "bool": ["maybe", 1, 0.0],
        "choice": [1, "none-of-these", True],
        "email_list": [5, [1], "not an address", True],
    }
    nested = [["liige@esta.example"]] if spec.type == "email_list" else [valid(spec)]
    oversized = {
        "text": "x" * (spec.max_length + 1),
        "datetime": "2201-01-01T10:00",
        "date": "2201-01-01",
        "int": spec.maximum + 1,
        "bool": "jah" * 4000,
        "choice": "x" * 20_000,
        "email_list": [f"liige{number}@esta.example" for number in range(spec.max_items + 1)],
    }[spec.type]
    return [
        *((f"wrong type {value!r}"[:40], value) for value in wrong_types[spec.type]),
        ("nested in a list", nested),
        ("nested in an object", {"value": valid(spec)}),
        ("oversized", oversized),
        *([("a huge number as text", "9" * 40)] if spec.type == "int" else []),
    ]


def attempts(spec: TransitionSpec) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(the field the refusal must name, what is wrong, the step's values)."""
    good = {field.name: valid(field) for field in spec.fields}
    for field in spec.fields:
        for what, value in wrong(field):
            yield field.name, what, {**good, field.name: value}
        if field.required:
            yield field.name, "missing", {k: v for k, v in good.items() if k != field.name}
    yield "colour", "a field the step does not take", {**good, "colour": "sinine"}


# -- a case where the step may be taken ---------------------------------------------------------


@dataclass
class Stage:
    ref: str
    actor: str | None


def stage(app: App, clock: ManualClock, workflow: str, spec: TransitionSpec) -> Stage:
    """A case in one of the step's source states, and the person who may take the step."""
    role = next(role for role in ACTORS if role in spec.roles)
    if workflow == "mentor_application":
        data = scenarios.applicant(APPLICANT, "Anne Aas")
        ref = scenarios.submit_application(app, data, actor=COORDINATOR)
        state = next(s for s in spec.sources if s in scenarios.STATE_PATHS)
        bring(app, clock, ref, state, APPLICANT)
        if role == "committee":  # a member votes from a seat on the interview's panel
            scenarios.step(
                app,
                ref,
                "schedule_interview",
                COORDINATOR,
                interview_at=clock.now + timedelta(days=5),
                place="Tallinn",
                committee=COMMITTEE,
            )
    else:
        list_mentor(app, clock, MENTOR, "Mari Mets")
        ref = scenarios.submit_request(app, scenarios.mentee(MENTEE, "Jaan Jõgi", MENTOR))
        state = next(s for s in spec.sources if s in scenarios.RELATION_PATHS)
        scenarios.bring_relation(app, clock, ref, state, mentor=MENTOR, mentee_email=MENTEE)
    return Stage(ref, ACTORS[role])


def trail(app: App, ref: str) -> tuple[str, int, int]:
    """The case's state, version and number of audit events."""
    with app.read() as tx:
        case, _ = load_case(tx, ref)
        events = tx.session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.case_id == case.id)
        )
        return case.state, case.version, events or 0


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", settings.database_url)


def api_names(answer: Any, field: str) -> bool:
    """Whether a 422 names the field: the step's refusal, or the body schema's for values."""
    detail = answer.json()["detail"]
    if isinstance(detail, dict):
        return bool(detail.get("field") == field)
    return any(problem["loc"][:3] == ["body", "values", field] for problem in detail)


@pytest.mark.parametrize(
    ("workflow", "index", "spec"),
    TRANSITIONS,
    ids=[f"{name}-{spec.trigger}-{index}" for name, index, spec in TRANSITIONS],
)
def test_every_field_of_every_step_refuses_what_it_does_not_take_naming_it(
    app: App,
    clock: ManualClock,
    cli: None,
    capsys: pytest.CaptureFixture[str],
    workflow: str,
    index: int,
    spec: TransitionSpec,
) -> None:
    at = stage(app, clock, workflow, spec)
    before = trail(app, at.ref)
    api = TestClient(create(app), raise_server_exceptions=False)
    with app.unit() as tx:
        token = tokens.create_token(tx, email=COORDINATOR, name="step data")[1]

    for field, what, values in attempts(spec):
        case = f"{spec.trigger}.{field}: {what}"
        with pytest.raises(InvalidInput) as refused, app.unit() as tx:
            services.advance_case(
                tx, ref=at.ref, trigger=spec.trigger, actor_email=at.actor, values=values
            )
        assert refused.value.field == field, case

        if at.actor is not None:
            step = ["case", "advance", at.ref, spec.trigger, "--actor", at.actor]
            code = main([*step, "--data", json.dumps(values)])
            out, err = capsys.readouterr()
            assert (code, out) == (1, ""), case
            assert err.startswith(f"invalid input: {field}: ") and err.count("\n") == 1, case

        if "coordinator" in spec.roles:
            answer = api.post(
                f"/api/v1/cases/{at.ref}/advance",
                headers={"Authorization": f"Bearer {token}"},
                json={"trigger": spec.trigger, "values": values},
            )
            assert answer.status_code == 422, (case, answer.text)
            assert api_names(answer, field), (case, answer.text)
    assert trail(app, at.ref) == before


def test_the_walk_feeds_every_type_a_field_may_declare() -> None:
    for kind in FIELD_TYPES:
        assert len(wrong(FieldSpec("x", kind, True, choices=("a",)))) >= 4, kind
    declared = {field.type for _, _, spec in TRANSITIONS for field in spec.fields}
    assert declared == set(FIELD_TYPES)


# -- valid data, in the spellings each caller sends ---------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # the conversion, not the database
def test_each_type_takes_its_json_value_and_its_form_spelling_alike(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, "Mari Mets")
    spellings: list[dict[str, Any]] = [
        {"rating": 4, "comment": "Hea"},
        {"rating": "4", "comment": "  Hea\n"},
    ]
    for mentee, values in zip(("a@example.org", "b@example.org"), spellings, strict=True):
        ref = scenarios.submit_request(app, scenarios.mentee(mentee, "Juhendatav", MENTOR))
        scenarios.bring_relation(app, clock, ref, "closed", mentor=MENTOR, mentee_email=mentee)
        scenarios.step(app, ref, "give_feedback", mentee, **values)
    with app.read() as tx:
        assert sorted(tx.session.execute(select(Feedback.rating, Feedback.comment))) == [
            (4, "Hea"),
            (4, "Hea"),
        ]


# -- the declarations themselves ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'fields.rating = { type = "int", minimum = 1, maximum = 5 }',
            'fields.rating = { type = "int", minimum = 1, maximum = 0 }',
            "fields.rating.maximum: must be a whole number from 1 up to",
        ),
        (
            'fields.rating = { type = "int", minimum = 1, maximum = 5 }',
            'fields.rating = { type = "int", max_length = 5 }',
            "fields.rating.max_length: a int field declares no max_length",
        ),
        (
            'fields.meeting_rhythm = { type = "text", max_length = 200 }',
            'fields.meeting_rhythm = { type = "text", max_length = 20000 }',
            "fields.meeting_rhythm.max_length: must be a positive number up to 10000",
        ),
        (
            'fields.outcome = { type = "choice", choices = ["completed", "ended_early"] }',
            'fields.outcome = { type = "choice", choices = [1, 2] }',
            "fields.outcome.choices: a choice needs its choices, as texts",
        ),
    ],
    ids=["maximum-below-minimum", "bound-of-another-type", "text-longer-than-callers", "choices"],
)
def test_a_fields_type_and_bounds_are_checked_when_the_file_loads(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    broken = _broken(tmp_path, load_settings(environ={}), "mentoring.toml", old, new)
    with pytest.raises(WorkflowError) as error:
        load_workflows(broken, REGISTRIES)
    assert "mentoring.toml" in str(error.value) and message in str(error.value)


@pytest.mark.parametrize("backend", ["sqlite"])  # the document, not the database
def test_the_openapi_shows_the_steps_body_typed_and_bounded(app: App) -> None:
    document = TestClient(create(app)).get("/openapi.json").json()
    advance = document["components"]["schemas"]["Advance"]
    assert advance["additionalProperties"] is False
    values = advance["properties"]["values"]
    assert values["maxProperties"] and values["propertyNames"]["maxLength"]
    kinds = {option["type"] for option in values["additionalProperties"]["anyOf"]}
    assert kinds == {"string", "integer", "boolean", "array", "null"}
    assert all(
        "maxLength" in option or "maxItems" in option or option["type"] != "string"
        for option in values["additionalProperties"]["anyOf"]
    )
