"""Hostile input: every form and API field, and every kind of email link, under attack.

Each test builds the web app on the `app` fixture (a real SQLite file or PostgreSQL) and
plays a browser or an API client with a TestClient that reports server errors as 500
answers instead of raising them: the point is that no input ever gets one. What a test
feeds: a body of a megabyte, control characters and CR/LF, HTML and <script>, SQL
metacharacters, text that is not Unicode (lone surrogates in JSON, invalid percent-encoded
UTF-8 in forms and URLs), and JSON values of the wrong type. What it checks: a 4xx
that names the field, the same number of rows in every table afterwards, and markup shown
escaped in every page and in the HTML part of every email (composed by `mailer.compose`,
as the worker sends it).

Oversized bodies, NUL and text that is not UTF-8 are refused by the web app's InputGuard
before any route runs; the rest by the field's own check. Links are signed tokens
(`lifecycle.links`): each kind is tampered with, swapped for another person's, replayed after
use and followed after it expired. Gaps below the web layer are marked `xfail(strict=True)`
with the module and the reason; they turn into failures once fixed.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import delete, func, select

from lifecycle.bootstrap import App
from lifecycle.cases import accounts
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.mail import bulk, mailer
from lifecycle.store.models import Base, LoginFailure, OutboxMessage, Person, Relation
from lifecycle.web import (
    api,
    api_public,
    committee,
    confirm,
    console,
    console_admin,
    link_steps,
    public,
)
from lifecycle.web import links as link_pages
from lifecycle.web.app import MAX_BODY, create
from lifecycle.workflows import links
from lifecycle.workflows.engine import load_case
from tests.conftest import COMMITTEE, COORDINATOR, confirm_by_email
from tests.test_web import application_form, bring, csrf_of, listed, login, open_round, submit
from tests.test_web_links import hidden, link_in

PASSWORD = "korrektne-hobune-patarei"
MENTOR = "mari.mets@example.org"
MENTEE = "jaan.jogi@example.org"
OTHER_MENTEE = "kati.kask@example.org"
APPLICANT = "anne.aas@example.org"
# Markup and SQL that are fine as text: stored as typed, never run, never markup on a page.
MARKUP = {
    "name": "<script>alert('nimi')</script> Õie O'Brien",
    "organisation": '<img src=x onerror=alert(1)> & "Ko"',
    "region": "Tartu'; DROP TABLE people; --",
    "degree_field": "<b>sotsiaaltöö</b>",
    "background": "<iframe src=javascript:alert(2)></iframe>\n1' OR '1'='1",
    "fee_note": "</textarea><script>alert(3)</script>",
    "question": '<svg onload=alert(4)>\n"; DELETE FROM cases; --',
}
RAW = re.compile(r"<(script|img|iframe|svg onload|b>)", re.IGNORECASE)  # markup let through
SERIAL = itertools.count()
FUZZ = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,  # the same inputs on every run: a finding is never flaky
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with small costs (as in test_web)."""
    monkeypatch.setattr(
        accounts, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def site(app: App) -> FastAPI:
    with app.unit() as tx:
        accounts.add_user(
            tx, name="Liis Lepik", email=COORDINATOR, role="coordinator", password=PASSWORD
        )
    return create(app)


@pytest.fixture
def web(site: FastAPI) -> Iterator[TestClient]:
    with browser(site) as client:
        yield client


def browser(site: FastAPI) -> TestClient:
    """A browser of its own that sees a server error as a 500 answer, not an exception."""
    return TestClient(site, follow_redirects=False, raise_server_exceptions=False)


def rows(app: App) -> dict[str, int]:
    """How many rows each table holds: the same before and after a refusal."""
    with app.unit() as tx:
        return {
            table.name: tx.session.scalar(select(func.count()).select_from(table)) or 0
            for table in Base.metadata.sorted_tables
        }


def coordinator(site: FastAPI) -> TestClient:
    client = browser(site)
    assert login(client, COORDINATOR, PASSWORD).status_code == 303
    return client


def request_form(web: TestClient, mentor_id: int, **overrides: str) -> dict[str, str]:
    form = {
        "csrf": csrf_of(web.get(f"/request?mentor={mentor_id}")),
        "mentor_id": str(mentor_id),
        "name": "Jaan Jõgi",
        "email": f"juhendatav{next(SERIAL)}@example.org",
        "language": "et",
        "organisation": "Pärnu Sotsiaalkeskus",
        "region": "Pärnumaa",
        "topic": "career",
        "question": "Kuidas kujundada oma karjääri?",
    }
    form.update(overrides)
    return form


def applicant_data(**overrides: Any) -> dict[str, Any]:
    """A valid application body of a new applicant, with some fields replaced."""
    data = scenarios.applicant(f"kandidaat{next(SERIAL)}@example.org", "Kandidaat")
    return {**data, **overrides}


def mentee_data(mentor_id: int, /, **overrides: Any) -> dict[str, Any]:
    """A valid request body of a new mentee to MENTOR (`mentor_id`: their directory id), with
    some fields replaced."""
    data = scenarios.mentee(f"juhendatav{next(SERIAL)}@example.org", "Juhendatav", MENTOR)
    del data["mentor"]
    return {**data, "mentor_id": mentor_id, **overrides}


def field_error(page: Response, field: str) -> str:
    """The error shown by a form field; fails when the field shows none."""
    found = re.search(rf'<p class="error" id="{field}-error">([^<]*)</p>', page.text)
    assert found, f"no error by the field {field} (status {page.status_code})"
    return found.group(1)


def composed(app: App) -> list[tuple[OutboxMessage, EmailMessage]]:
    """Every queued email as the worker would send it."""
    with app.unit() as tx:
        messages = tx.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        found = []
        for message in messages:
            mail = message_from_bytes(
                mailer.compose(tx.session, tx.settings, message), policy=policy.default
            )
            assert isinstance(mail, EmailMessage)
            found.append((message, mail))
    return found


def body(mail: EmailMessage, subtype: str) -> str:
    part = mail.get_body(preferencelist=(subtype,))
    assert part is not None
    content: str = part.get_content()
    return content


# -- oversized bodies ------------------------------------------------------------------------

POST_ROUTES = sorted(
    route.path
    for router in (
        public.router,
        link_pages.router,
        link_steps.router,
        console.router,
        committee.router,
        console_admin.router,
        api.router,
        api_public.router,
        confirm.router,
    )
    for route in router.routes
    if "POST" in getattr(route, "methods", ())
)


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any route or query runs
def test_a_megabyte_in_any_field_of_any_form_or_api_body_is_refused_with_413(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    ref = submit(app, APPLICANT, "Anne Aas")
    client = coordinator(site)
    token = csrf_of(client.get("/console/login"))
    huge = "õ" * (MAX_BODY // 2 + 1)  # two bytes each in UTF-8: over the limit
    before = rows(app)
    assert len(POST_ROUTES) >= 15  # every form and API endpoint, found from the routers
    for path in POST_ROUTES:
        url = path.format(ref=ref, action="respond", text="x.0", message_id=1)
        as_form = client.post(url, data={"csrf": token, "name": huge, "f_reason": huge})
        as_json = client.post(url, json={"name": huge, "values": {"reason": huge}})
        for answer in (as_form, as_json):
            assert answer.status_code == 413, url
            assert answer.json() == {"detail": "the request is too large: at most 256 KB"}
    assert rows(app) == before


# -- control characters and line breaks ------------------------------------------------------

# One-line fields refuse these with a message naming the field; NUL never reaches a field:
# no text column stores it, so any form or URL holding it is refused outright (400).
BREAKS = {"crlf": "Mari\r\nBcc: x@example.org", "escape": "Mari\x1b[2J", "tab": "Mari\tMets"}
REQUEST_LINE_FIELDS = ("name", "email", "organisation", "region")
APPLY_LINE_FIELDS = ("name", "email", "organisation", "region", "degree_field")


def test_control_characters_in_one_line_form_fields_are_refused_by_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    open_round(app, clock)
    before = rows(app)
    for field, (kind, text) in itertools.product(REQUEST_LINE_FIELDS, BREAKS.items()):
        page = web.post("/request", data=request_form(web, mentor_id, **{field: text}))
        assert page.status_code == 422, (field, kind)
        assert "Kirjuta see ühele reale." in field_error(page, field) or (
            field == "email" and "Kirjuta e-posti aadress kujul" in field_error(page, field)
        )
    for field, (kind, text) in itertools.product(APPLY_LINE_FIELDS, BREAKS.items()):
        page = web.post("/apply", data=application_form(web, **{field: text}))
        assert page.status_code == 422, (field, kind)
        field_error(page, field)
    nul = web.post("/request", data=request_form(web, mentor_id, question="Miks\x00?"))
    assert nul.status_code == 400
    assert nul.json() == {"detail": "the form holds a NUL character"}
    assert rows(app) == before


def test_control_characters_in_one_line_api_fields_are_refused_by_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    requests = partial(mentee_data, listed(app, clock, MENTOR, "Mari Mets"))
    open_round(app, clock)
    before = rows(app)
    cases = [
        *(("applications", applicant_data, field) for field in APPLY_LINE_FIELDS),
        *(("requests", requests, field) for field in (*REQUEST_LINE_FIELDS, "mentor_id")),
    ]
    for (path, valid, field), text in itertools.product(cases, [*BREAKS.values(), "Mari\x00"]):
        answer = web.post(f"/api/v1/{path}", json=valid(**{field: text}))
        assert answer.status_code == 422, (path, field, text)
        assert answer.json()["detail"]["field"] == field
    assert rows(app) == before


# -- markup and SQL --------------------------------------------------------------------------


def test_markup_and_sql_are_stored_as_typed_and_shown_escaped_in_every_page_and_email(
    app: App, clock: ManualClock, web: TestClient, site: FastAPI
) -> None:
    open_round(app, clock)
    # A region is chosen from a list, never typed.
    typed = {key: value for key, value in MARKUP.items() if key not in ("question", "region")}
    applied = web.post("/apply", data=application_form(web, email=MENTOR, **typed))
    assert applied.status_code == 200, applied.text
    ref = re.search(r"A-\d+", confirm_by_email(web, app, MENTOR).text)
    assert ref
    bring(app, clock, ref.group(0), "listed", MENTOR)
    with app.unit() as tx:
        mentor = tx.session.scalar(select(Person).where(Person.email == MENTOR))
        assert mentor is not None and mentor.profile is not None
        assert (mentor.name, mentor.organisation, mentor.region) == (
            MARKUP["name"],
            MARKUP["organisation"],
            "Ida-Virumaa",
        )
        assert mentor.profile.background == MARKUP["background"]  # SQL text, kept as text
        mentor_id = mentor.id
    asked = web.post(
        "/request",
        data=request_form(
            web,
            mentor_id,
            email=MENTEE,
            name=MARKUP["fee_note"],
            organisation=MARKUP["region"],
            question=MARKUP["question"],
        ),
    )
    assert asked.status_code == 200, asked.text
    relation_ref = re.search(r"M-\d+", confirm_by_email(web, app, MENTEE).text)
    assert relation_ref
    with app.unit() as tx:
        _, relation = load_case(tx, relation_ref.group(0))
        assert isinstance(relation, Relation)
        assert relation.question == MARKUP["question"]
    staff = coordinator(site)
    mentor_browser = browser(site)
    respond = mentor_browser.get(link_in(app, template="request_received", to=MENTOR))
    assert respond.status_code == 303
    pages = {
        "directory": web.get("/"),
        "mentor page": web.get(f"/mentors/{mentor_id}"),
        "request form": web.get(f"/request?mentor={mentor_id}"),
        "the mentor's link page": mentor_browser.get(respond.headers["location"]),
        "console": staff.get("/console"),
        "case list": staff.get("/console/cases"),
        "application": staff.get(f"/console/cases/{ref.group(0)}"),
        "relation": staff.get(f"/console/cases/{relation_ref.group(0)}"),
        "outbox": staff.get("/console/outbox"),
    }
    for where, page in pages.items():
        assert page.status_code == 200, where
        assert not RAW.search(page.text), f"markup let through on the {where}"
    for where in ("directory", "mentor page", "case list", "the mentor's link page"):
        assert str(escape(MARKUP["name"])) in pages[where].text, where
    assert str(escape(MARKUP["background"])).split("\n")[0] in pages["mentor page"].text
    assert str(escape(MARKUP["question"])).split("\n")[0] in pages["the mentor's link page"].text
    assert str(escape(MARKUP["question"])).split("\n")[0] not in pages["relation"].text  # §6
    assert web.get(f"/api/v1/mentors/{mentor_id}").json()["name"] == MARKUP["name"]

    mails = composed(app)
    assert {message.template for message, _ in mails} >= {"request_received", "listed_welcome"}
    for message, mail in mails:
        reader = mail["To"].addresses[0]
        assert (reader.display_name, reader.addr_spec) == (message.to_name, message.to_email)
        assert mail["Bcc"] is None and "\n" not in str(mail["Subject"])
        html = body(mail, "html")
        assert not RAW.search(html), f"markup let through in {message.template}"
        assert str(escape(message.to_name)) in html
    received = next(mail for message, mail in mails if message.template == "request_received")
    assert MARKUP["fee_note"] in body(received, "plain")  # plain text is not markup
    assert str(escape(MARKUP["fee_note"])) in body(received, "html")


# -- text that is not Unicode ----------------------------------------------------------------

# Percent-encoded bytes that do not decode as UTF-8: a stray byte, a surrogate's encoding
# and an overlong slash.
NOT_UTF8 = ("Mari%FF", "Mari%ED%B3%BF", "%C0%AF")
FORM_ROUTES = [path for path in POST_ROUTES if not path.startswith("/api/")]


@pytest.mark.parametrize("backend", ["sqlite"])  # refused before any route or query runs
def test_a_form_or_url_that_is_not_utf8_is_refused_with_400_everywhere(
    app: App, site: FastAPI
) -> None:
    ref = submit(app, APPLICANT, "Anne Aas")
    client = coordinator(site)
    token = csrf_of(client.get("/console/login"))
    before = rows(app)
    form = {"content-type": "application/x-www-form-urlencoded"}
    for path, text in itertools.product(FORM_ROUTES, NOT_UTF8):
        url = path.format(ref=ref, action="respond", text="x.0", message_id=1)
        answer = client.post(url, content=f"csrf={token}&name={text}&f_reason={text}", headers=form)
        assert answer.status_code == 400, url
        assert answer.json() == {"detail": "the form holds text that is not valid UTF-8"}
    for url in ("/?region=", "/console/cases?q=", "/api/v1/mentors?topic=", "/apply?lang="):
        for text in (*NOT_UTF8, "Mari%00"):
            answer = client.get(url + text)
            assert answer.status_code == 400, url + text
            assert answer.json()["detail"].startswith("the URL holds")
    assert rows(app) == before


def test_lone_surrogates_in_json_are_refused_by_the_field_and_never_echoed(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    requests = partial(mentee_data, listed(app, clock, MENTOR, "Mari Mets"))
    ref = submit(app, APPLICANT, "Anne Aas")
    open_round(app, clock)
    client = browser(site)
    basic = (COORDINATOR, PASSWORD)
    before = rows(app)

    def post(path: str, data: Any) -> Response:
        # json.dumps writes a lone surrogate as the escape "\udcff", which JSON allows.
        raw = json.dumps(data).encode()
        headers = {"content-type": "application/json"}
        return client.post(path, content=raw, headers=headers, auth=basic)

    bodies = [
        *(("/api/v1/applications", applicant_data, key) for key in applicant_data()),
        *(("/api/v1/requests", requests, key) for key in requests()),
    ]
    for path, valid, key in bodies:
        answer = post(path, valid(**{key: "Mari\udcff"}))
        assert answer.status_code == 422, (path, key)
        assert answer.json()["detail"] == {
            "field": key,
            "reason": "is not valid Unicode text (a lone surrogate)",
        }
    step = f"/api/v1/cases/{ref}/advance"
    for data, field in (
        ({"trigger": "begin_review\udcff"}, "trigger"),
        ({"trigger": "request_info", "values": {"message": "\ud800"}}, "values.message"),
        ({"trigger": "begin_review", "values": {"\udcff": "x"}}, "a field name in values"),
        ({"trigger": "begin_review", "override_reason": "\udfff"}, "override_reason"),
    ):
        answer = post(step, data)
        assert answer.status_code == 422, data
        assert answer.json()["detail"]["field"] == field
    for data in (
        ["\udcff"],
        "\udcff",
        {"trigger": ["\udcff"]},
        {"trigger": "x", "expected_version": 1e400},
    ):
        answer = post(step, data)  # FastAPI's own check: its answer no longer echoes the input
        assert answer.status_code == 422, data
        assert "input" not in answer.json()["detail"][0]
    not_utf8 = client.post(step, content=b'{"trigger": "\xff"}', auth=basic)
    assert not_utf8.status_code == 422
    assert rows(app) == before


def test_credentials_that_cannot_be_an_address_are_simply_wrong(app: App, site: FastAPI) -> None:
    client = browser(site)

    def forget_failures() -> None:  # each try as if from another client: no throttling here
        with app.unit() as tx:
            tx.session.execute(delete(LoginFailure))

    for user in ("liis\x00@esta.example", "liis\r\n@esta.example", "x" * 400, "' OR 1=1 --"):
        answer = client.get("/api/v1/cases", auth=(user, PASSWORD))
        assert answer.status_code == 401, user
        forget_failures()
    for user in ("liis\r\n@esta.example", "x" * 400, "' OR 1=1 --", "<script>@x.ee"):
        page = login(client, user, PASSWORD)
        assert page.status_code == 401, user
        assert "<script>" not in page.text
        forget_failures()
    assert login(client, COORDINATOR, PASSWORD).status_code == 303


# -- JSON values of the wrong type -----------------------------------------------------------

WRONG_TYPES = [
    ("applications", "capacity", "two"),
    ("applications", "capacity", True),
    ("applications", "years_in_social_field", [12]),
    ("applications", "degree_in_social_work", "yes"),
    ("applications", "degree_level", ["master"]),
    ("applications", "regions", "Tartumaa"),
    ("applications", "credentials", {"kind": "coach"}),
    ("applications", "documents", ["diplom.pdf"]),
    ("applications", "topics", ["career", 5]),
    ("requests", "is_manager", "no"),
    ("requests", "topic", ["career"]),
    ("requests", "mentor_id", "7"),
    ("requests", "language", 1),
    ("applications", "name", ["Mari"]),
    ("requests", "question", {"q": 1}),
    ("requests", "organisation", 12345),
    ("applications", "topics", 5),
    ("applications", "formats", 1.5),
    ("applications", "capacity", 10**40),
    ("applications", "years_in_social_field", 1e300),
]


def test_json_values_of_the_wrong_type_are_refused_by_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    requests = partial(mentee_data, listed(app, clock, MENTOR, "Mari Mets"))
    open_round(app, clock)
    before = rows(app)
    for path, field, value in WRONG_TYPES:
        valid = applicant_data if path == "applications" else requests
        answer = web.post(f"/api/v1/{path}", json=valid(**{field: value}))
        assert answer.status_code == 422, (field, value, answer.text)
        assert answer.json()["detail"]["field"].startswith(field)
    assert rows(app) == before


# -- email links: tampered, swapped, replayed, expired ---------------------------------------

APPLICATION_KINDS = ("provide_info", "availability")
SUBSCRIPTION_KINDS = ("confirm_subscription", "unsubscribe")
KINDS = (*link_pages.ACTION_TRIGGERS, *SUBSCRIPTION_KINDS)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def issued(
    app: App, kind: str, *, email: str | None = None, ref: str | None = None
) -> tuple[str, str | None]:
    """A link of this kind, issued as the workflows issue them, and the page it opens.

    With a case, it is for the person with `email` on that case; without, for the subscriber
    with that address.
    """
    with app.unit() as tx:
        person_id = case_id = subscriber_id = None
        if ref is not None:
            case_id = load_case(tx, ref)[0].id
            person_id = tx.session.scalar(select(Person.id).where(Person.email == email))
        else:
            assert email is not None
            subscriber_id = bulk.subscribe(tx, email=email, language="et").id
        token = links.issue(
            tx.session,
            links.token_row(
                tx.settings,
                action=kind,
                now=tx.now,
                person_id=person_id,
                subscriber_id=subscriber_id,
                case_id=case_id,
            ),
        )
        url = links.url(token, tx.settings)
    return url.removeprefix(app.settings.base_url), f"/act/{ref}/{kind}" if ref else None


def two_links(
    app: App, clock: ManualClock, kind: str
) -> tuple[tuple[str, str | None], tuple[str, str | None]]:
    """A link of this kind and one of the same kind for another person on another case."""
    if kind in SUBSCRIPTION_KINDS:
        return issued(app, kind, email="huviline@example.org"), issued(
            app, kind, email="teine.huviline@example.org"
        )
    mentor_application = submit(app, MENTOR, "Mari Mets")
    bring(app, clock, mentor_application, "listed", MENTOR)
    if kind in APPLICATION_KINDS:
        other = submit(app, APPLICANT, "Anne Aas")
        return issued(app, kind, email=MENTOR, ref=mentor_application), issued(
            app, kind, email=APPLICANT, ref=other
        )
    first = scenarios.submit_request(app, scenarios.mentee(MENTEE, "Jaan Jõgi", MENTOR))
    second = scenarios.submit_request(app, scenarios.mentee(OTHER_MENTEE, "Kati Kask", MENTOR))
    return issued(app, kind, email=MENTEE, ref=first), issued(app, kind, email=MENTOR, ref=second)


def flip(text: str) -> str:
    """The text with its last character changed to another it may hold."""
    return text[:-1] + ("0" if text[-1] != "0" else "1")


def unused(app: App, link: str) -> bool:
    token_id = link.removeprefix("/l/").partition(".")[0]
    with app.unit() as tx:
        token = tx.session.get(links.ActionToken, token_id)
        assert token is not None
        return token.used_at is None


def assert_invalid(answer: Response, what: str) -> None:
    assert answer.status_code == 404, what
    assert 'data-rule="link_invalid"' in answer.text, what
    assert "/act/" not in answer.text and "/fresh" not in answer.text, what


# Every kind on SQLite; on PostgreSQL (time zones, row locks) a case link and a subscriber's.
@pytest.mark.parametrize(
    ("backend", "kind"),
    [*(("sqlite", kind) for kind in KINDS), ("postgres", "respond"), ("postgres", "unsubscribe")],
)
def test_a_link_tampered_swapped_replayed_or_expired_is_refused_and_grants_nothing(
    app: App, clock: ManualClock, site: FastAPI, kind: str
) -> None:
    (link, page), (other, other_page) = two_links(app, clock, kind)
    token_id, _, signature = link.removeprefix("/l/").partition(".")
    other_id, _, other_signature = other.removeprefix("/l/").partition(".")
    client = browser(site)
    csrf = csrf_of(client.get("/console/login"))
    before = rows(app)

    for forged in (
        f"{flip(token_id)}.{signature}",  # one character of the token changed
        f"{token_id}.{flip(signature)}",  # one character of the signature changed
        f"{token_id}.{other_signature}",  # another person's signature on this token
        f"{other_id}.{signature}",  # this signature on another person's token
        f"{token_id}.{signature}0",
        f"{token_id}.{signature[:-1]}",
        f"{token_id}.{signature.upper()}",
        token_id,
        f"{token_id}'--.{signature}",
    ):
        assert_invalid(client.get(f"/l/{forged}"), forged)
        assert_invalid(client.post(f"/l/{forged}", data=ONE_CLICK), forged)
        assert_invalid(client.post(f"/l/{forged}/fresh", data={"csrf": csrf}), forged)
    if page is not None:
        assert client.get(page).status_code == 403  # nothing was granted
    assert rows(app) == before and unused(app, link) and unused(app, other)

    # Opened by its reader: it works, and opening spends nothing (mail scanners open links).
    assert client.get(link).status_code in (200, 303)
    assert unused(app, link)
    if kind == "unsubscribe":
        assert 'data-outcome="unsubscribed"' in client.post(link, data=ONE_CLICK).text
    elif kind == "confirm_subscription":
        assert 'data-outcome="confirmed"' in client.post(link).text
    else:
        opened = client.get(link)
        assert (opened.status_code, opened.headers["location"]) == (303, page)
        assert client.get(page).status_code == 200
        assert other_page is not None
        assert client.get(other_page).status_code == 403  # it opens its own case only
        with app.unit() as tx:  # the reader's first step spends it (tests/test_web_links.py)
            token_id = link.removeprefix("/l/").partition(".")[0]
            links.spend(
                tx.session, token_id, now=tx.now, spent_here=False, grace=tx.settings.link_grace
            )
    assert not unused(app, link)

    # Used again, from another browser: refused, or for subscriptions, nothing to do again.
    replay = browser(site)
    if kind == "unsubscribe":
        again = replay.post(link, data=ONE_CLICK)
        assert 'data-outcome="unsubscribed_already"' in again.text
    elif kind == "confirm_subscription":
        assert 'data-outcome="confirmed_already"' in replay.get(link).text
    else:
        again = replay.get(link)
        assert again.status_code == 410 and 'data-rule="link_used"' in again.text
        assert page is not None and replay.get(page).status_code == 403

    # Followed after it expired: refused, and it stays unspent.
    clock.now += app.settings.link_valid + timedelta(minutes=1)
    late = browser(site)
    expired = [late.get(other)] + (
        [late.post(other, data=ONE_CLICK)] if kind == "unsubscribe" else []
    )
    for answer in expired:
        assert answer.status_code == 410 and 'data-rule="link_expired"' in answer.text
    assert unused(app, other)
    if other_page is not None:
        assert late.get(other_page).status_code == 403


@pytest.mark.parametrize("backend", ["sqlite"])  # the link's shape is checked before a lookup
def test_any_one_character_changed_anywhere_in_a_link_makes_it_invalid(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    (link, page), _ = two_links(app, clock, "respond")
    text = link.removeprefix("/l/")
    client = browser(site)

    @given(
        index=st.integers(min_value=0, max_value=len(text) - 1),
        character=st.characters(exclude_characters="/"),
    )
    @FUZZ
    def changed(index: int, character: str) -> None:
        forged = text[:index] + character + text[index + 1 :]
        if forged != text:
            assert_invalid(client.get(f"/l/{quote(forged, safe='')}"), forged)

    changed()
    assert unused(app, link)
    assert client.get(link).headers["location"] == page


# -- field lengths, and the gaps below the web layer ------------------------------------------


def test_a_name_longer_than_its_column_is_refused_by_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    before = rows(app)

    page = web.post("/request", data=request_form(web, mentor_id, name="Mari " * 200))

    assert page.status_code == 422
    assert "Kõige rohkem 200 tähemärki" in field_error(page, "name")
    assert rows(app) == before


@pytest.mark.parametrize("backend", ["sqlite"])  # the limit is the service's, not the column's
def test_a_question_of_100_000_characters_is_refused_by_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    before = rows(app)

    page = web.post("/request", data=request_form(web, mentor_id, question="Miks? " * 20_000))

    assert page.status_code == 422
    assert "Kõige rohkem 10\xa0000 tähemärki" in field_error(page, "question")
    assert rows(app) == before


@pytest.mark.parametrize("backend", ["sqlite"])  # the same on PostgreSQL
def test_escape_and_bell_characters_in_a_multi_line_field_are_refused_by_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    before = rows(app)

    page = web.post("/request", data=request_form(web, mentor_id, question="Mis\x1b[2J saab\x07?"))

    assert page.status_code == 422
    field_error(page, "question")
    assert rows(app) == before


def test_a_meeting_place_longer_than_its_column_is_refused_on_the_link_page(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    listed(app, clock, MENTOR, "Mari Mets")
    ref = scenarios.submit_request(app, scenarios.mentee(MENTEE, "Jaan Jõgi", MENTOR))
    scenarios.step(app, ref, "accept", MENTOR)
    client = browser(site)
    page = client.get(link_in(app, template="request_accepted", to=MENTOR, ref=ref))
    html = client.get(page.headers["location"]).text
    before = rows(app)

    answer = client.post(
        page.headers["location"],
        data={
            "csrf": hidden(html, "csrf"),
            "version": hidden(html, "version"),
            "trigger": "schedule_meeting",
            "f_starts_at": "2026-09-10T10:00",
            "f_place": "Tallinn " * 75,
        },
    )

    assert answer.status_code == 422
    assert 'id="schedule_meeting-place-error"' in answer.text
    assert rows(app) == before


def test_an_intake_round_name_longer_than_its_column_is_refused(app: App, site: FastAPI) -> None:
    client = coordinator(site)
    token = csrf_of(client.get("/console/rounds"))
    before = rows(app)

    answer = client.post(
        "/console/rounds",
        data={
            "csrf": token,
            "action": "create",
            "name": "Sügisvoor " * 15,
            "opens": "2027-09-01T09:00",
            "closes": "2027-09-30T17:00",
        },
    )

    assert answer.status_code == 303
    assert "name:" in client.get("/console/rounds").text
    assert rows(app) == before


# -- the console's and the link pages' own forms ---------------------------------------------


def test_hostile_text_in_console_and_link_forms_is_kept_as_text_and_never_a_server_error(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    ref = submit(app, APPLICANT, "Anne Aas")
    scenarios.step(app, ref, "begin_review", COORDINATOR)
    staff = coordinator(site)
    page = staff.get(f"/console/cases/{ref}")
    form = {"csrf": csrf_of(page), "version": hidden(page.text, "version")}

    asked = staff.post(
        f"/console/cases/{ref}/advance",
        data={**form, "trigger": "request_info", "f_message": MARKUP["question"]},
    )
    assert asked.status_code == 303
    applicant = browser(site)
    opened = applicant.get(link_in(app, template="info_requested", to=APPLICANT, ref=ref))
    shown = applicant.get(opened.headers["location"]).text
    assert str(escape(MARKUP["question"])).split("\n")[0] in shown and not RAW.search(shown)
    mail = next(mail for message, mail in composed(app) if message.template == "info_requested")
    assert MARKUP["question"].split("\n")[0] in body(mail, "plain")
    assert not RAW.search(body(mail, "html"))

    before = rows(app)
    form["version"] = hidden(staff.get(f"/console/cases/{ref}").text, "version")
    for data in (
        {"trigger": MARKUP["name"]},
        {"trigger": "request_info", f"f_{MARKUP['name']}": "x", "f_message": "x"},
        {"trigger": "request_info", "f_message": "x", "version": "²"},
    ):
        refused = staff.post(f"/console/cases/{ref}/advance", data={**form, **data})
        assert refused.status_code in (409, 422), data
        assert not RAW.search(refused.text)
    assert staff.post(f"/console/cases/{MARKUP['name']}/advance", data=form).status_code == 404
    assert staff.post("/console/outbox/99999999999999999999/retry", data=form).status_code == 404
    assert rows(app) == before
    searched = staff.get("/console/cases", params={"q": MARKUP["name"]})
    assert searched.status_code == 200 and not RAW.search(searched.text)
    assert f'value="{escape(MARKUP["name"])}"' in searched.text
    jumped = staff.get("/console/cases", params={"q": "A-1\r\nSet-Cookie: x=1"})
    assert "\r" not in jumped.headers["location"] and "x=1" not in jumped.headers.get(
        "set-cookie", ""
    )
    rounds = staff.post(
        "/console/rounds",
        data={
            "csrf": form["csrf"],
            "action": "create",
            "name": MARKUP["name"],
            "opens": "2027-09-01T09:00",
            "closes": "2027-09-30T17:00",
        },
    )
    assert rounds.status_code == 303
    listing = staff.get("/console/rounds").text
    assert str(escape(MARKUP["name"])) in listing and not RAW.search(listing)

    with app.unit() as tx:
        accounts.add_user(
            tx, name="Helle Hein", email=COMMITTEE[0], role="committee", password=PASSWORD
        )
    member = browser(site)
    assert login(member, COMMITTEE[0], PASSWORD).status_code == 303
    token = csrf_of(member.get("/console/committee"))
    vote = member.post("/console/committee/A-999/vote", data={"csrf": token, "vote": "approve"})
    # Not this member's interview: the committee page says so, as for any case not theirs.
    assert vote.status_code == 404 and not RAW.search(vote.text)

    visitor = browser(site)
    shown = visitor.get("/console/login", params={"next": MARKUP["name"]}).text
    assert not RAW.search(shown)
    away = visitor.post(
        "/console/login",
        data={
            "csrf": csrf_of(visitor.get("/console/login")),
            "email": COORDINATOR,
            "password": PASSWORD,
            "next": "/\\evil.example",
        },
    )
    assert away.status_code == 303
    assert not away.headers["location"].startswith(("//", "/\\"))


# -- any text in any field -------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    [*MARKUP.values(), *BREAKS.values(), "Mari\x00", "  ", "\u202eMari", "Mari\u2028Mets"]
)
# The region is chosen from a list (test_identity.py), not typed.
APPLY_TEXT_FIELDS = ("name", "organisation", "degree_field", "background", "fee_note")


def test_any_text_in_an_application_form_field_is_refused_by_it_or_kept_as_typed(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)

    @given(field=st.sampled_from(APPLY_TEXT_FIELDS), text=TEXT)
    @FUZZ
    def typed(field: str, text: str) -> None:
        email = f"kandidaat{next(SERIAL)}@example.org"
        before = rows(app)
        page = web.post("/apply", data=application_form(web, email=email, **{field: text}))
        assert page.status_code in (200, 400, 422), page.text
        if page.status_code != 200:
            assert rows(app) == before
        if page.status_code == 422:
            assert str(escape(text)) in page.text  # shown again as typed, escaped
        if page.status_code == 200:
            assert confirm_by_email(web, app, email).status_code == 200
            with app.unit() as tx:
                person = tx.session.scalar(select(Person).where(Person.email == email))
                assert person is not None and person.profile is not None
                stored = {
                    "name": person.name,
                    "organisation": person.organisation,
                    "region": person.region,
                    "degree_field": person.profile.degree_field,
                    "background": person.profile.background,
                    "fee_note": person.profile.fee_note,
                }
            assert stored[field] == text.strip()
        assert not RAW.search(page.text)

    typed()


SURROGATES = st.sampled_from(["\udcff", "\ud800", "\udfff"])
ANY_TEXT = st.text(st.characters() | SURROGATES | st.just("\x00"), max_size=40) | TEXT
REQUEST_TEXT_FIELDS = ("name", "organisation", "region", "question", "topic", "language")


def test_any_text_in_an_api_field_is_refused_by_it_or_kept_as_typed(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    requests = partial(mentee_data, listed(app, clock, MENTOR, "Mari Mets"))
    fields = [("applications", field) for field in (*APPLY_TEXT_FIELDS, "degree_level")]
    fields += [("requests", field) for field in REQUEST_TEXT_FIELDS]

    @given(where=st.sampled_from(fields), text=ANY_TEXT)
    @FUZZ
    def typed(where: tuple[str, str], text: str) -> None:
        path, field = where
        data = (applicant_data if path == "applications" else requests)(**{field: text})
        before = rows(app)
        answer = web.post(
            f"/api/v1/{path}",
            content=json.dumps(data).encode(),
            headers={"content-type": "application/json"},
        )
        assert answer.status_code in (202, 422), answer.text
        if answer.status_code == 422:
            detail = answer.json()["detail"]
            assert detail.get("field") == field or "rule" in detail, detail
            assert rows(app) == before
            return
        if field in ("name", "organisation", "region"):
            assert confirm_by_email(web, app, data["email"]).status_code == 200
            with app.unit() as tx:
                person = tx.session.scalar(select(Person).where(Person.email == data["email"]))
                assert person is not None
                assert getattr(person, field) == text.strip()

    typed()
