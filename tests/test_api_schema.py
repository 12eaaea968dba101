"""Schemathesis against /openapi.json: no generated input makes the JSON API answer 5xx.

The app runs on a migrated SQLite file built once for the module, with a listed mentor, an
open intake round, an application in `interview` and a coordinator whose HTTP Basic
credentials every generated request carries, so the staff endpoints are reached too.

Generated bodies of POST /applications and /requests seldom get past their first field with
a real mentor, a free address and every rule met; a second test therefore starts from a valid
body and replaces one field with any JSON value.

Schemathesis' lazy `from_fixture` loader does not run under pytest 9 (it writes
`request.node._nodeid`), and `from_asgi` at import time would build a database on
collection; so the schema comes from a module fixture and each operation's strategy is
driven by Hypothesis here, one test per operation and generation mode.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import schemathesis
from argon2 import PasswordHasher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from sqlalchemy import select
from starlette.testclient import TestClient

from lifecycle import bootstrap
from lifecycle.cases import accounts
from lifecycle.config import load_settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.schedule import intake
from lifecycle.store import db
from lifecycle.store.models import Person
from lifecycle.web.app import create
from tests.conftest import COMMITTEE, COORDINATOR, bring, list_mentor

START = datetime(2026, 9, 1, 7, 0, tzinfo=UTC)
MENTOR = "mari.mets@example.org"
PASSWORD = "korrektne-hobune-patarei"
BASIC = {
    "Authorization": "Basic " + base64.b64encode(f"{COORDINATOR}:{PASSWORD}".encode()).decode()
}
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a finding is never flaky
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Api:
    schema: schemathesis.BaseSchema
    existing: dict[str, Any]  # path parameters naming things that exist


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    path = tmp_path_factory.mktemp("schema") / "mentorlus.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.migrate(engine)
    engine.dispose()
    clock = ManualClock(START)
    core = bootstrap.build(
        replace(load_settings(environ={}), database_url=f"sqlite:///{path}"), clock=clock
    )
    with pytest.MonkeyPatch.context() as patch:
        # Argon2 with small costs: every generated request checks the coordinator's password.
        patch.setattr(
            accounts, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
        )
        with core.unit() as tx:
            accounts.add_user(
                tx, name="Liis Lepik", email=COORDINATOR, role="coordinator", password=PASSWORD
            )
        for index, email in enumerate(COMMITTEE):
            scenarios.add_staff(core, name=f"Liige {index + 1}", email=email, role="committee")
        list_mentor(core, clock, MENTOR, "Mari Mets")
        in_interview = scenarios.submit_application(
            core, scenarios.applicant("anne.aas@example.org", "Anne Aas"), actor=COORDINATOR
        )
        bring(core, clock, in_interview, "interview", "anne.aas@example.org")
        opens = (clock.now - timedelta(days=1)).replace(tzinfo=None)
        with core.unit() as tx:
            intake.create_round(
                tx,
                name="Sügisvoor 2026",
                opens=opens.isoformat(timespec="minutes"),
                closes=(opens + timedelta(days=30)).isoformat(timespec="minutes"),
            )
            mentor_id = tx.session.scalar(select(Person.id).where(Person.email == MENTOR))
        yield Api(
            schemathesis.openapi.from_asgi("/openapi.json", create(core)),
            {"person_id": mentor_id, "ref": in_interview},
        )
    core.engine.dispose()


# Every operation of the API: a new one must be added here (a test checks the list).
OPERATIONS = [
    ("GET", "/api/v1/mentors"),
    ("GET", "/api/v1/mentors/{person_id}"),
    ("POST", "/api/v1/applications"),
    ("POST", "/api/v1/requests"),
    ("GET", "/api/v1/cases"),
    ("GET", "/api/v1/cases/{ref}"),
    ("POST", "/api/v1/cases/{ref}/advance"),
]


def test_the_operation_list_covers_the_whole_api(api: Api) -> None:
    found = {
        (operation.method.upper(), operation.path)
        for operation in (result.ok() for result in api.schema.get_all_operations())
    }
    assert found == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_generated_request_makes_the_api_fail_with_a_server_error(
    api: Api, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api.schema[path][method]
    strategy = operation.as_strategy(mode)
    known = {name: value for name, value in api.existing.items() if "{" + name + "}" in path}
    if known and mode is GenerationMode.POSITIVE:
        strategy = strategy | operation.as_strategy(mode, path_parameters=known)

    @given(case=strategy)
    @SETTINGS
    def no_server_error(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=BASIC, checks=[not_a_server_error])

    no_server_error()


# -- valid bodies with one field replaced by any JSON value ------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
SERIAL = itertools.count()


def _application(api: Api) -> dict[str, Any]:
    return scenarios.applicant(f"kandidaat{next(SERIAL)}@example.org", "Kandidaat")


def _request(api: Api) -> dict[str, Any]:
    data = scenarios.mentee(f"juhendatav{next(SERIAL)}@example.org", "Juhendatav", MENTOR)
    del data["mentor"]  # the public API names the mentor by their directory id
    return {**data, "mentor_id": api.existing["person_id"]}


@pytest.mark.parametrize(
    ("path", "valid"),
    [
        ("/api/v1/applications", _application),
        ("/api/v1/requests", _request),
    ],
    ids=["applications", "requests"],
)
def test_a_valid_body_with_any_one_field_replaced_never_makes_a_server_error(
    api: Api, path: str, valid: Any
) -> None:
    operation = api.schema[path]["POST"]
    keys = sorted(valid(api))

    @given(key=st.sampled_from(keys), value=JSON)
    @SETTINGS
    def no_server_error(key: str, value: Any) -> None:
        body = valid(api)
        body[key] = value
        case = operation.Case(body=body, media_type="application/json")
        case.call_and_validate(headers=BASIC, checks=[not_a_server_error])

    no_server_error()


def test_every_error_the_case_api_answers_is_the_one_its_schema_documents(api: Api) -> None:
    client = TestClient(api.schema.app)
    ref = api.existing["ref"]
    advance = api.schema["/api/v1/cases/{ref}/advance"]["POST"]
    answers = {
        401: client.post(f"/api/v1/cases/{ref}/advance", json={"trigger": "approve"}),
        404: client.post("/api/v1/cases/A-999999/advance", headers=BASIC, json={"trigger": "x"}),
        409: client.post(
            f"/api/v1/cases/{ref}/advance",
            headers=BASIC,
            json={"trigger": "approve", "expected_version": 1},
        ),
        422: client.post(f"/api/v1/cases/{ref}/advance", headers=BASIC, json={"trigger": "x"}),
    }
    for status, answer in answers.items():
        assert answer.status_code == status, (status, answer.text)
        advance.validate_response(answer)
    submitted = client.post("/api/v1/requests", json={"email": "x"})
    assert submitted.status_code == 422
    api.schema["/api/v1/requests"]["POST"].validate_response(submitted)
    assert submitted.json()["detail"]["field"]
