"""Personal API tokens, and the password login the API keeps for people.

A token is made with `mentorlus token create` (run here through the CLI against the test's own
database, SQLite or PostgreSQL), shown once, kept only as its SHA-256, recorded when last used
(at most once a minute) and refused once revoked — with the very answer an unknown token gets.
HTTP Basic stays, but not over plain http to a site served over https.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cases import tokens
from lifecycle.cli.main import main
from lifecycle.config import Settings
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.privacy import erasure, export
from lifecycle.store.models import ApiToken, AuditEvent, Base, LoginFailure, Person
from lifecycle.web import auth
from lifecycle.web.app import create
from tests.conftest import COMMITTEE, COORDINATOR, STAFF_PASSWORD, bring

MENTEE = "jaan.jogi@example.org"


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mentorlus` commands run against the test's database."""
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", settings.database_url)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """The CLI with --json: (exit code, parsed stdout or None, stderr)."""
    code = main(["--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def make_token(app: App, email: str = COORDINATOR, name: str = "Ühingu veebileht") -> str:
    return made_token(app, email, name)[1]


def made_token(app: App, email: str = COORDINATOR, name: str = "Veebileht") -> tuple[int, str]:
    """A new token's id, and the token."""
    with app.unit() as tx:
        row, token = tokens.create_token(tx, email=email, name=name)
        return row.id, token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_row(app: App, token_id: int | None = None) -> ApiToken:
    with app.read() as tx:
        query = select(ApiToken).order_by(ApiToken.id.desc())
        if token_id is not None:
            query = query.where(ApiToken.id == token_id)
        row = tx.session.scalars(query).first()
        assert row is not None
        return row


def everything_stored(app: App) -> str:
    """Every value of every row of every table, as one text."""
    with app.read() as tx:
        return repr(
            [
                list(row)
                for table in Base.metadata.sorted_tables
                for row in tx.session.execute(select(table))
            ]
        )


# -- making, listing and revoking --------------------------------------------------------------


def test_a_token_is_shown_once_and_kept_only_as_its_hash(
    app: App, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, made, err = run(
        capsys, "token", "create", "--email", COORDINATOR.upper(), "--name", "Ühingu veebileht"
    )

    assert code == 0 and "shown only now" in err
    token = made["token"]
    assert token.startswith("mlt_") and len(token) >= 4 + 43  # 32 random bytes, base64
    assert (made["email"], made["name"]) == (COORDINATOR, "Ühingu veebileht")
    row = token_row(app, made["id"])
    assert row.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert token not in everything_stored(app)
    code, listed, _ = run(capsys, "token", "list")
    assert code == 0 and token not in json.dumps(listed)
    assert listed == [
        {
            "id": made["id"],
            "email": COORDINATOR,
            "name": "Ühingu veebileht",
            "created": listed[0]["created"],
            "last_used": None,
            "revoked": None,
        }
    ]
    second = run(capsys, "token", "create", "--email", COORDINATOR, "--name", "Teine")[1]
    assert second["token"] != token


def test_token_list_shows_one_staff_members_tokens_and_revoke_stops_one(
    app: App, cli: None, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = run(capsys, "token", "create", "--email", COORDINATOR, "--name", "Veebileht")[1]
    run(capsys, "token", "create", "--email", COMMITTEE[0], "--name", "Kalender")

    code, listed, _ = run(capsys, "token", "list", "--email", COMMITTEE[0])
    assert code == 0 and [t["name"] for t in listed] == ["Kalender"]

    code, revoked, _ = run(capsys, "token", "revoke", str(mine["id"]))
    assert code == 0 and revoked["id"] == mine["id"] and revoked["revoked"]
    again = run(capsys, "token", "revoke", str(mine["id"]))
    assert again[0] == 0 and again[1]["revoked"] == revoked["revoked"]  # changes nothing
    everyone = run(capsys, "token", "list")[1]
    assert [(t["name"], t["revoked"] is not None) for t in everyone] == [
        ("Veebileht", True),
        ("Kalender", False),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "--email", MENTEE, "--name", "x"], f"not found: {MENTEE} has no staff login"),
        (["create", "--email", "nobody@example.org", "--name", "x"], "not found: nobody@"),
        (["create", "--email", COORDINATOR, "--name", "  "], "invalid input: name: is required"),
        (["create", "--email", COORDINATOR, "--name", "a\nb"], "invalid input: name: must be one"),
        (["create", "--email", COORDINATOR, "--name", "x" * 101], "invalid input: name: must be"),
        (["revoke", "999"], "not found: no API token 999"),
    ],
    ids=["not-staff", "unknown", "no-name", "two-lines", "long-name", "unknown-token"],
)
def test_a_token_is_made_only_for_a_staff_login_and_a_refusal_is_one_line(
    app: App,
    cli: None,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    with app.unit() as tx:  # a mentee, who acts through links and has no login
        tx.session.add(Person(name="Jaan", email=MENTEE, created_at=tx.now))

    code, out, err = run(capsys, "token", *argv)

    assert (code, out) == (1, None)
    assert err.startswith(message) and err.count("\n") == 1, err
    with app.read() as tx:
        assert tx.session.scalar(select(func.count()).select_from(ApiToken)) == 0


def test_every_token_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for path in (["token"], ["token", "create"], ["token", "list"], ["token", "revoke"]):
        with pytest.raises(SystemExit) as exit_:
            main([*path, "--help"])
        assert exit_.value.code == 0, path
        text = capsys.readouterr().out
        assert text.startswith(f"usage: mentorlus {' '.join(path)}"), path
    with pytest.raises(SystemExit):
        main(["token", "--help"])
    listed = capsys.readouterr().out
    assert all(f"    {action} " in listed for action in ("create", "list", "revoke")), listed


# -- the API with a token ----------------------------------------------------------------------


def test_the_api_takes_a_token_and_records_its_last_use_at_most_once_a_minute(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    token = make_token(app)

    first = web.get("/api/v1/cases", headers=bearer(token))
    assert first.status_code == 200 and first.json() == []
    assert token_row(app).last_used_at == clock.now
    used_at = clock.now

    clock.advance(seconds=50)
    assert web.get("/api/v1/cases", headers=bearer(token)).status_code == 200
    assert token_row(app).last_used_at == used_at  # not written again within the minute

    clock.advance(seconds=20)
    assert web.get("/api/v1/cases", headers=bearer(token)).status_code == 200
    assert token_row(app).last_used_at == clock.now


def test_a_revoked_an_unknown_and_a_former_staff_members_token_get_the_same_401(
    app: App, web: TestClient
) -> None:
    revoked_id, revoked = made_token(app)
    unknown = "mlt_" + "A" * 43
    former = make_token(app, COMMITTEE[1])
    with app.unit() as tx:
        tokens.revoke_token(tx, token_id=revoked_id)
        member = tx.session.scalar(select(Person).where(Person.email == COMMITTEE[1]))
        assert member is not None
        member.role = None  # no longer on the committee

    answers = [
        web.get("/api/v1/cases", headers=bearer(token)) for token in (revoked, unknown, former)
    ]
    answers.append(web.get("/api/v1/cases", headers={"Authorization": "Bearer"}))

    assert {answer.status_code for answer in answers} == {401}
    assert len({(answer.text, answer.headers["www-authenticate"]) for answer in answers}) == 1
    with app.read() as tx:
        assert tx.session.scalar(select(func.count()).select_from(LoginFailure)) == 0


def test_a_committee_members_token_does_not_open_the_case_api(
    app: App, web: TestClient
) -> None:
    answer = web.get("/api/v1/cases", headers=bearer(make_token(app, COMMITTEE[0])))
    assert answer.status_code == 403
    assert answer.json() == {"detail": "only coordinators use the case API"}


def test_a_token_takes_a_step_as_its_coordinator(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    email = "anne.aas@example.org"
    ref = scenarios.submit_application(app, scenarios.applicant(email, "Anne"), actor=COORDINATOR)
    bring(app, clock, ref, "eligibility", email)

    answer = web.post(
        f"/api/v1/cases/{ref}/advance",
        headers=bearer(make_token(app)),
        json={"trigger": "request_info", "values": {"message": "Palun lisage diplom."}},
    )

    assert answer.status_code == 200, answer.text
    assert web.get(f"/api/v1/cases/{ref}", headers=bearer(make_token(app))).json()["state"] == (
        "awaiting_info"
    )
    with app.read() as tx:
        step = tx.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        coordinator = tx.session.scalar(select(Person.id).where(Person.email == COORDINATOR))
        assert step is not None and (step.trigger, step.actor_id) == ("request_info", coordinator)


# -- the password login over http and https ----------------------------------------------------


@pytest.fixture
def https_site(settings: Settings, clock: ManualClock, web: TestClient) -> Iterator[App]:
    """The same database, as a site whose base_url is https (the `web` fixture made the logins)."""
    https = replace(settings, base_url="https://mentorlus.example.ee")
    served = bootstrap.build(https, clock=clock)
    yield served
    served.engine.dispose()


def test_a_password_over_plain_http_is_refused_when_the_site_is_served_over_https(
    https_site: App,
) -> None:
    site = create(https_site)
    plain = TestClient(site, base_url="http://mentorlus.example.ee")
    secure = TestClient(site, base_url="https://mentorlus.example.ee")

    for password in (STAFF_PASSWORD, "vale-parool-123"):
        refused = plain.get("/api/v1/cases", auth=(COORDINATOR, password))
        assert refused.status_code == 403
        assert "plain http" in refused.json()["detail"] and "https" in refused.json()["detail"]
    with https_site.read() as tx:  # refused before the password was looked at
        assert tx.session.scalar(select(func.count()).select_from(LoginFailure)) == 0

    assert secure.get("/api/v1/cases", auth=(COORDINATOR, STAFF_PASSWORD)).status_code == 200
    assert secure.get("/api/v1/cases", auth=(COORDINATOR, "vale-parool-123")).status_code == 401


def test_a_password_over_http_still_works_for_a_site_served_over_http(web: TestClient) -> None:
    assert web.get("/api/v1/cases", auth=(COORDINATOR, STAFF_PASSWORD)).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])  # the document, not the database
def test_the_openapi_documents_both_ways_to_sign_in(web: TestClient) -> None:
    document = web.get("/openapi.json").json()
    schemes = document["components"]["securitySchemes"]
    assert {(s["type"], s["scheme"]) for s in schemes.values()} == {
        ("http", "basic"),
        ("http", "bearer"),
    }
    for path, method in (("/api/v1/cases", "get"), ("/api/v1/cases/{ref}/advance", "post")):
        security = document["paths"][path][method]["security"]
        assert sorted(name for requirement in security for name in requirement) == sorted(schemes)
        assert all(len(requirement) == 1 for requirement in security)  # either one will do


# -- a person's tokens in their export and erasure ---------------------------------------------


def test_a_staff_members_tokens_are_in_their_export_without_the_hash_and_go_with_them(
    app: App, web: TestClient
) -> None:
    token = make_token(app, COMMITTEE[0], "Kalender")
    assert web.get("/api/v1/cases", headers=bearer(token)).status_code == 403  # used once

    with app.read() as tx:
        exported = export.export_person(tx, email=COMMITTEE[0])
    assert [(t["name"], t["revoked_at"]) for t in exported["api_tokens"]] == [("Kalender", None)]
    assert exported["api_tokens"][0]["last_used_at"]
    assert "token_sha256" not in exported["api_tokens"][0]

    with app.unit() as tx:
        erased = erasure.erase_person(tx, email=COMMITTEE[0])
    assert erased["counts"]["api_tokens"] == 1
    with app.read() as tx:
        assert tx.session.scalar(select(func.count()).select_from(ApiToken)) == 0
    assert web.get("/api/v1/cases", headers=bearer(token)).status_code == 401


def test_a_token_never_runs_the_password_login(
    app: App, web: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = make_token(app)

    def password_login(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a call with a token checked a password")

    monkeypatch.setattr(auth, "verify_login", password_login)
    assert web.get("/api/v1/cases", headers=bearer(token)).status_code == 200
    assert web.get("/api/v1/cases", headers=bearer("mlt_unknown")).status_code == 401


def test_a_use_just_after_another_process_wrote_one_writes_nothing(
    app: App, clock: ManualClock
) -> None:
    token_id, _ = made_token(app)
    with app.unit() as tx:
        tokens.record_use(tx, token_id=token_id)
    used_at = clock.now
    clock.advance(seconds=59)
    with app.unit() as tx:  # the other process had read the token before that write
        tokens.record_use(tx, token_id=token_id)
    assert token_row(app, token_id).last_used_at == used_at
    clock.advance(seconds=1)
    with app.unit() as tx:
        tokens.record_use(tx, token_id=token_id)
    assert token_row(app, token_id).last_used_at == clock.now
