"""Trust at the public edge: what a stranger can make the service send, serve or store.

Each test is one promise of docs/security.md, tried from outside as an attacker would.
"""

from __future__ import annotations

import csv
import email
import email.policy
import io
import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.mail import mailer
from lifecycle.reports import charts, disclosure
from lifecycle.reports.disclosure import Table
from lifecycle.store.models import OutboxMessage
from lifecycle.web import diagram
from lifecycle.web import pages as web_pages
from lifecycle.web.app import create
from tests.conftest import COORDINATOR, STAFF_PASSWORD, list_mentor

MENTOR = "mari.mets@example.org"
MENTEE = "jaan.jogi@example.org"
STRANGERS_LINK = "https://mentorlus.example.org.evil.example/login"


def html_part(raw: bytes) -> str:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    body = message.get_body(("html",))
    assert body is not None
    return str(body.get_content())


def test_an_email_links_only_the_services_own_urls_and_shows_a_typed_url_as_text(
    app: App, clock: ManualClock
) -> None:
    list_mentor(app, clock, MENTOR, "Mari Mets")
    ref = scenarios.submit_request(app, scenarios.mentee(MENTEE, "Jaan Jõgi", MENTOR))
    scenarios.bring_relation(app, clock, ref, "first_meeting", mentor=MENTOR, mentee_email=MENTEE)
    place = f"Video: {STRANGERS_LINK}"
    starts_at = clock.now + timedelta(days=3)
    scenarios.step(app, ref, "schedule_meeting", MENTOR, starts_at=starts_at, place=place)

    with app.read() as tx:
        base_url = tx.settings.base_url
        sent = tx.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        htmls = {m.template: html_part(mailer.compose(tx.session, tx.settings, m)) for m in sent}

    assert "mentorlus.example.org.evil.example/login" in htmls["meeting_scheduled"]  # as text
    hrefs = [href for html in htmls.values() for href in re.findall(r'href="([^"]+)"', html)]
    assert any(f"{base_url}/l/" in href for href in hrefs)  # the steps' own links are links
    assert all(href.startswith(base_url + "/") for href in hrefs), hrefs


# -- headers ------------------------------------------------------------------------------------

EVERY_KIND_OF_PAGE = [
    "/",  # public
    "/apply",
    "/console/login",
    "/console",  # behind the login
    "/console/reports/mentors.csv",  # a download
    "/api/v1/cases",
    "/l/not-a-token",  # behind an email link
    "/no-such-page",  # an error
]


def login(client: TestClient, email: str) -> None:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text)
    assert token
    data = {"csrf": token.group(1), "email": email, "password": STAFF_PASSWORD}
    assert client.post("/console/login", data=data).status_code == 303


@pytest.mark.parametrize("path", EVERY_KIND_OF_PAGE)
def test_every_answer_forbids_framing_sniffing_referrers_scripts_and_keeping_it(
    web: TestClient, path: str
) -> None:
    login(web, COORDINATOR)
    answer = web.get(path, auth=(COORDINATOR, STAFF_PASSWORD) if "/api/" in path else None)
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy and "unsafe-inline" not in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert answer.headers["cache-control"] == "no-store"
    assert "strict-transport-security" not in answer.headers  # served over plain http


def test_the_stylesheet_may_be_cached_but_not_sniffed(web: TestClient) -> None:
    answer = web.get("/static/style.css")
    assert answer.status_code == 200
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in answer.headers.get("cache-control", "")


def test_a_site_served_over_https_tells_browsers_to_keep_to_https(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app, "settings", replace(app.settings, base_url="https://m.example.ee"))
    with TestClient(create(app), base_url="https://m.example.ee") as client:
        answer = client.get("/")
    assert answer.headers["strict-transport-security"].startswith("max-age=31536000")


def test_no_page_template_or_chart_needs_an_inline_script_or_style() -> None:
    """The policy allows neither: a page that had one would lose it in the browser."""
    templates = Path(web_pages.__file__).parent / "templates"
    sources = [path.read_text(encoding="utf-8") for path in templates.rglob("*.html")]
    sources.append(Path(charts.__file__).read_text(encoding="utf-8"))
    sources.append(Path(diagram.__file__).read_text(encoding="utf-8"))
    inline = re.compile(r"<script|<style|\sstyle=|\son[a-z]+=|javascript:", re.IGNORECASE)
    assert [found.group() for text in sources for found in inline.finditer(text)] == []


# -- exports ------------------------------------------------------------------------------------


def test_a_csv_cell_that_a_spreadsheet_would_run_as_a_formula_is_written_as_text() -> None:
    typed = ['=HYPERLINK("https://evil.example","x")', "+1", "-1+2", "@SUM(A1)", "\tx", "\rx"]
    table = Table("regions", ("region", "people"), [(text, 3) for text in typed] + [("Tartu", -1)])

    read = list(csv.reader(io.StringIO(disclosure.to_csv(table), newline="")))

    assert read[0] == ["region", "people"]
    assert [row[0] for row in read[1:-1]] == [f"'{text}" for text in typed]
    assert read[-1] == ["Tartu", "-1"]  # a number stays a number


# -- login throttle -----------------------------------------------------------------------------

WRONG = "vale-parool-12345"


def from_client(app: App, host: str) -> TestClient:
    return TestClient(create(app), follow_redirects=False, client=(host, 50000))


def try_login(client: TestClient, email: str, password: str) -> int:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text)
    assert token
    data = {"csrf": token.group(1), "email": email, "password": password}
    return client.post("/console/login", data=data).status_code


def test_failing_logins_from_another_client_never_lock_the_owner_out(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    attacker = from_client(app, "203.0.113.9")
    answers = []
    for _ in range(40):
        answers.append(try_login(attacker, COORDINATOR, WRONG))
        clock.advance(seconds=20)
    assert 429 in answers and answers.count(401) < 10  # the attacker is slowed down

    assert try_login(web, COORDINATOR, STAFF_PASSWORD) == 303  # the owner, elsewhere


def test_a_client_that_keeps_failing_waits_longer_each_time(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    client = from_client(app, "203.0.113.9")
    for _ in range(3):
        assert try_login(client, COORDINATOR, WRONG) == 401
    assert try_login(client, COORDINATOR, STAFF_PASSWORD) == 429  # even the right password
    api = TestClient(create(app), client=("203.0.113.9", 50001))
    refused = api.get("/api/v1/cases", auth=(COORDINATOR, STAFF_PASSWORD))
    assert refused.status_code == 429 and refused.headers["retry-after"] == "30"

    clock.advance(seconds=31)
    assert try_login(client, COORDINATOR, WRONG) == 401
    refused = api.get("/api/v1/cases", auth=(COORDINATOR, STAFF_PASSWORD))
    assert refused.headers["retry-after"] == "120"

    clock.advance(seconds=121)
    assert try_login(client, COORDINATOR, WRONG) == 401
    refused = api.get("/api/v1/cases", auth=(COORDINATOR, STAFF_PASSWORD))
    assert 600 < int(refused.headers["retry-after"]) <= 900

    clock.advance(minutes=16)
    assert try_login(client, COORDINATOR, STAFF_PASSWORD) == 303


def test_guessing_one_account_from_many_clients_is_slowed_but_a_new_client_gets_in(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    guessers = [from_client(app, f"198.51.100.{n}") for n in range(25)]
    for guesser in guessers:
        assert try_login(guesser, COORDINATOR, WRONG) == 401
    clock.advance(minutes=3)

    assert try_login(guessers[0], COORDINATOR, STAFF_PASSWORD) == 429  # one try per client
    assert try_login(from_client(app, "192.0.2.1"), COORDINATOR, STAFF_PASSWORD) == 303


def test_a_client_guessing_many_accounts_is_stopped_for_all_of_them(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    stuffer = from_client(app, "203.0.113.50")
    for n in range(25):
        assert try_login(stuffer, f"someone{n}@example.org", WRONG) == 401
    assert try_login(stuffer, COORDINATOR, STAFF_PASSWORD) == 429
    assert try_login(web, COORDINATOR, STAFF_PASSWORD) == 303  # another client is not
