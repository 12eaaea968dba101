"""The web app over HTTP: public pages, forms, the console, the committee view and the JSON API.

Each test builds the FastAPI app from the `app` fixture (a real SQLite file or PostgreSQL),
puts data in through the real service path (`scenarios`) and talks to it with a TestClient,
as a browser without JavaScript would: GET a page, read its CSRF token, POST the form.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from fastapi import FastAPI
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import event, func, select

from lifecycle.bootstrap import App
from lifecycle.cases import accounts, queries
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.schedule import intake
from lifecycle.store.models import (
    Application,
    AuditEvent,
    Case,
    CommitteeVote,
    OutboxMessage,
    PendingSubmission,
    Person,
)
from lifecycle.web import public
from lifecycle.web.app import create
from lifecycle.workflows.engine import load_case
from tests.conftest import (
    COMMITTEE,
    COORDINATOR,
    bring,
    confirm_by_email,
    list_mentor,
    write_lock_held,
)

PASSWORD = "korrektne-hobune-patarei"
MENTOR = "mari.mets@example.org"  # Tartu Linnavalitsus, master's in social work, career
OTHER_MENTOR = "kadri.kask@example.org"  # Viljandi Haigla, career: suggested instead
MENTEE = "jaan.jogi@example.org"
QUESTION = "Kuidas kujundada oma karjääri järgmised viis aastat?"
NEW_QUESTION = "Kuidas juhtida meeskonna muudatusi?"
GOAL = "Selge karjääriplaan"  # the agreement goal scenarios.bring_relation drafts
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
VERSION = re.compile(r'name="version" value="(\d+)"')


# Behaviour that does not depend on the database engine (sessions, cookies, CSRF, parsing
# input): one backend is enough. Overrides the conftest `backend` parameters.
web_layer_only = pytest.mark.parametrize("backend", ["sqlite"])


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 with small costs (the default takes ~0.4 s a hash here)."""
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(accounts, "HASHER", cheap)


@pytest.fixture
def site(app: App) -> FastAPI:
    """The web app, with passwords for the conftest coordinator and committee members."""
    with app.unit() as tx:
        accounts.add_user(
            tx, name="Liis Lepik", email=COORDINATOR, role="coordinator", password=PASSWORD
        )
        for index, email in enumerate(COMMITTEE):
            accounts.add_user(
                tx,
                name=f"Komisjoniliige {index + 1}",
                email=email,
                role="committee",
                password=PASSWORD,
            )
    return create(app)


@pytest.fixture
def web(site: FastAPI) -> Iterator[TestClient]:
    """One browser: keeps its cookies, does not follow redirects."""
    with TestClient(site, follow_redirects=False) as client:
        yield client


def browser(site: FastAPI) -> TestClient:
    """Another browser with its own session."""
    return TestClient(site, follow_redirects=False)


def csrf_of(response: Response) -> str:
    found = CSRF.search(response.text)
    assert found, f"no CSRF token on {response.request.url}"
    return found.group(1)


def login(client: TestClient, email: str, password: str = PASSWORD) -> Response:
    token = csrf_of(client.get("/console/login"))
    return client.post("/console/login", data={"csrf": token, "email": email, "password": password})


def listed(app: App, clock: ManualClock, email: str, name: str, **overrides: Any) -> int:
    """A mentor listed in the directory through the real application steps; their person id."""
    list_mentor(app, clock, email, name, **overrides)
    return person_id(app, email)


def submit(app: App, email: str, name: str, **overrides: Any) -> str:
    data = scenarios.applicant(email, name, **overrides)
    return scenarios.submit_application(app, data, actor=COORDINATOR)


def person_id(app: App, email: str) -> int:
    with app.unit() as tx:
        found = tx.session.scalar(select(Person.id).where(Person.email == email))
    assert found is not None
    return found


def state_of(app: App, ref: str) -> str:
    with app.unit() as tx:
        case, _ = load_case(tx, ref)
        return case.state


def version_of(app: App, ref: str) -> int:
    with app.unit() as tx:
        case, _ = load_case(tx, ref)
        return case.version


def relation(app: App, clock: ManualClock, state: str) -> str:
    """MENTEE's relation with a listed MENTOR, brought to `state` through the real steps."""
    listed(app, clock, MENTOR, "Mari Mets")
    ref = scenarios.submit_request(app, scenarios.mentee(MENTEE, "Jaan Jõgi", MENTOR))
    scenarios.bring_relation(app, clock, ref, state, mentor=MENTOR, mentee_email=MENTEE)
    return ref


def open_round(app: App, clock: ManualClock) -> None:
    zone = app.settings.time_zone
    opens = (clock.now - timedelta(days=1)).astimezone(zone).replace(tzinfo=None)
    with app.unit() as tx:
        intake.create_round(
            tx,
            name="Sügisvoor 2026",
            opens=opens.isoformat(timespec="minutes"),
            closes=(opens + timedelta(days=30)).isoformat(timespec="minutes"),
        )


def names_in(html: str, names: list[str]) -> set[str]:
    return {name for name in names if name in html}


@pytest.fixture
def directory(app: App, clock: ManualClock) -> dict[str, int]:
    """Two listed mentors who differ in every filter, and four people who are not listed."""
    ids = {
        "Mari Mets": listed(app, clock, MENTOR, "Mari Mets"),
        "Tiit Tamm": listed(
            app,
            clock,
            "tiit.tamm@example.org",
            "Tiit Tamm",
            organisation="Harku Vallavalitsus",
            region="Harjumaa",
            regions=["Harjumaa"],
            degree_level="bachelor",
            topics=["self_care_system"],
            background="Eakate hoolekanne ja koduhooldus.",
            languages=["et"],
            formats=["online"],
            capacity=1,
        ),
    }
    # Tiit's one place is taken by an accepted request.
    ref = scenarios.submit_request(
        app,
        scenarios.mentee(
            "kati.kask@example.org", "Kati Kask", "tiit.tamm@example.org", topic="self_care_system"
        ),
    )
    scenarios.step(app, ref, "accept", "tiit.tamm@example.org")
    for email, name, state in [
        ("peeter.paus@example.org", "Peeter Paus", "paused"),
        ("reet.ruus@example.org", "Reet Ruus", "retired"),
        ("rasmus.rebane@example.org", "Rasmus Rebane", "rejected"),
        ("silvia.sepp@example.org", "Silvia Sepp", "submitted"),
    ]:
        bring(app, clock, submit(app, email, name), state, email)
        ids[name] = person_id(app, email)
    return ids


EVERYONE = ["Mari Mets", "Tiit Tamm", "Peeter Paus", "Reet Ruus", "Rasmus Rebane", "Silvia Sepp"]
FILTERS = [
    ({"topic": "self_care_system"}, {"Tiit Tamm"}),
    ({"topic": "career"}, {"Mari Mets"}),
    ({"region": "Harjumaa"}, {"Tiit Tamm"}),
    ({"language": "en"}, {"Mari Mets"}),
    ({"format": "in_person"}, {"Mari Mets"}),
    ({"background": "EAKATE"}, {"Tiit Tamm"}),
    ({"background": "sotsiaaltöö"}, {"Mari Mets", "Tiit Tamm"}),
    ({"free": "on"}, {"Mari Mets"}),
    ({"managers": "on"}, {"Mari Mets"}),
    ({"topic": "career", "region": "Harjumaa"}, set()),
]


# -- public pages ----------------------------------------------------------------------------

PAGE_WORDS = {
    "/": ("Leia mentor", "Find a mentor"),
    "/mentors/{id}": ("Palu seda mentorit", "Request this mentor"),
    "/request?mentor={id}": ("Sinu konkreetne küsimus", "Your concrete question"),
    "/apply": ("Praegu kandideerida ei saa", "Applications are closed at the moment"),
    "/console/login": ("Parool", "Password"),
}


def test_every_public_page_is_estonian_by_default_and_english_on_request(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    estonian, english = browser(site), browser(site)
    for path, (et_word, en_word) in PAGE_WORDS.items():
        url = path.format(id=mentor_id)
        page = estonian.get(url)
        assert page.status_code == 200, url
        assert '<html lang="et">' in page.text
        assert et_word in page.text
        joiner = "&" if "?" in url else "?"
        page = english.get(f"{url}{joiner}lang=en")
        assert page.status_code == 200, url
        assert '<html lang="en">' in page.text
        assert en_word in page.text


def test_a_refused_or_unknown_address_is_a_page_in_the_readers_language_and_json_under_api(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    listed(app, clock, MENTOR, "Mari Mets")
    committee = browser(site)
    assert login(committee, COMMITTEE[0]).status_code == 303
    cases = [
        (browser(site), "GET", "/mentors/99999", 404, "Lehte ei leitud", "Page not found", "/"),
        (browser(site), "GET", "/no-such-page", 404, "Lehte ei leitud", "Page not found", "/"),
        (browser(site), "POST", "/", 405, "Seda lehte ei saa nii avada", "cannot be opened", "/"),
        (browser(site), "GET", "/mentors/abc", 422, "ei saa lugeda", "cannot be read", "/"),
        (committee, "GET", "/console", 403, "ligipääsu ei ole", "do not have access", "/console"),
    ]
    for client, method, path, status, estonian, english, back in cases:
        for language, words in (("et", estonian), ("en", english)):
            client.get(f"/?lang={language}")
            answer = client.request(method, path)
            assert answer.status_code == status, path
            assert answer.headers["content-type"].startswith("text/html"), path
            assert f'<html lang="{language}">' in answer.text and words in answer.text, path
            assert f'href="{back}"' in answer.text.split("<main", 1)[1], path
            assert '"detail"' not in answer.text
    assert "allow" in {name.lower() for name in browser(site).post("/").headers}

    api = browser(site).get("/api/v1/no-such-thing")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}


def test_an_unexpected_error_is_a_page_in_the_readers_language_with_the_usual_headers(
    site: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(public, "search", broken)
    client = TestClient(site, raise_server_exceptions=False)
    for language, words in (("et", "Midagi läks valesti"), ("en", "Something went wrong")):
        answer = client.get(f"/?lang={language}")
        assert answer.status_code == 500
        assert answer.headers["content-type"].startswith("text/html")
        assert f'<html lang="{language}">' in answer.text and words in answer.text
        assert "a bug" not in answer.text and "Traceback" not in answer.text
        assert answer.headers["content-security-policy"] and answer.headers["cache-control"]
    api = client.get("/api/v1/mentors")
    assert api.status_code == 500 and "nothing was changed" in api.json()["detail"]
    with pytest.raises(RuntimeError):  # still raised to the server, which logs it
        TestClient(site).get("/")


@web_layer_only
def test_the_chosen_language_stays_for_the_next_pages(web: TestClient) -> None:
    web.get("/?lang=en")
    page = web.get("/apply")
    assert '<html lang="en">' in page.text
    assert "Apply as a mentor" in page.text


@web_layer_only
def test_the_stylesheet_is_served_by_the_app_itself(web: TestClient) -> None:
    assert web.get("/static/style.css").status_code == 200
    assert "https://" not in web.get("/").text.split("<main")[0]


def test_the_directory_shows_only_listed_mentors(
    web: TestClient, directory: dict[str, int]
) -> None:
    page = web.get("/")
    assert page.status_code == 200
    assert names_in(page.text, EVERYONE) == {"Mari Mets", "Tiit Tamm"}
    assert f'href="/mentors/{directory["Mari Mets"]}"' in page.text


def test_each_directory_filter_narrows_the_listed_mentors(
    web: TestClient, directory: dict[str, int]
) -> None:
    for params, expected in FILTERS:
        page = web.get("/", params=params)
        assert page.status_code == 200
        assert names_in(page.text.split("</form>", 1)[1], EVERYONE) == expected, params


def test_a_mentor_page_shows_background_topics_fee_and_the_request_button(
    web: TestClient, directory: dict[str, int]
) -> None:
    page = web.get(f"/mentors/{directory['Mari Mets']}")
    assert page.status_code == 200
    assert "Lastekaitse ja perede nõustamine" in page.text
    assert "Tasu kokkuleppel." in page.text
    assert "Karjäärieesmärgid" in page.text or "karjäärieesmärgid" in page.text
    assert f'href="/request?mentor={directory["Mari Mets"]}"' in page.text
    # Tiit has no free place: no button.
    full = web.get(f"/mentors/{directory['Tiit Tamm']}")
    assert "/request?mentor=" not in full.text


def test_languages_are_named_in_the_readers_language_never_by_code(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets", languages=["et", "en"])
    paths = ["/?", f"/mentors/{mentor_id}?", f"/request?mentor={mentor_id}&"]
    named = {"et": ("eesti keel", "inglise keel"), "en": ("Estonian", "English")}
    for language, names in named.items():
        for path in paths:
            main = browser(site).get(f"{path}lang={language}").text.split("<main", 1)[1]
            assert all(name in main for name in names), (language, path)
            assert ">et<" not in main and ">en<" not in main and "et, en" not in main, path


def test_a_mentor_page_is_not_found_for_anyone_who_is_not_listed(
    web: TestClient, directory: dict[str, int]
) -> None:
    for who in ("Peeter Paus", "Reet Ruus", "Rasmus Rebane", "Silvia Sepp"):
        assert web.get(f"/mentors/{directory[who]}").status_code == 404, who
    assert web.get("/mentors/987654").status_code == 404


# -- the request form ------------------------------------------------------------------------


def request_form(web: TestClient, mentor: int, /, **overrides: Any) -> dict[str, Any]:
    token = csrf_of(web.get(f"/request?mentor={mentor}"))
    form = {
        "csrf": token,
        "mentor_id": str(mentor),
        "name": "Jaan Jõgi",
        "email": MENTEE,
        "language": "et",
        "organisation": "Pärnu Sotsiaalkeskus",
        "region": "Pärnumaa",
        "topic": "career",
        "question": QUESTION,
    }
    form.update(overrides)
    return form


def test_a_valid_request_opens_a_case_and_tells_the_mentor(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    asked = web.post("/request", data=request_form(web, mentor_id))
    assert asked.status_code == 200
    assert "Kinnita pöördumine e-postist" in asked.text
    page = confirm_by_email(web, app, MENTEE)
    assert page.status_code == 200
    assert "Pöördumine on saadetud" in page.text
    ref = re.search(r"M-\d+", page.text)
    assert ref, page.text
    assert state_of(app, ref.group(0)) == "requested"
    with app.unit() as tx:
        case, _ = load_case(tx, ref.group(0))
        sent = tx.session.scalars(
            select(OutboxMessage.to_email).where(
                OutboxMessage.case_id == case.id, OutboxMessage.template == "request_received"
            )
        ).all()
    assert sent == [MENTOR]


def test_a_request_with_a_bad_email_is_shown_again_with_the_error_by_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    form = request_form(web, mentor_id, email="jaan-at-example", organisation="Pärnu Küla & Co")
    page = web.post("/request", data=form)
    assert page.status_code == 422
    field = page.text.split('<label for="email">', 1)[1].split('<div class="field', 1)[0]
    assert 'aria-invalid="true"' in field
    assert 'id="email-error"' in field
    assert "Kirjuta e-posti aadress kujul" in field
    assert 'value="jaan-at-example"' in page.text
    assert 'value="Jaan Jõgi"' in page.text
    assert 'value="Pärnu Küla &amp; Co"' in page.text
    assert QUESTION in page.text
    with app.unit() as tx:
        assert tx.session.scalar(select(func.count()).select_from(Case)) == 1  # the listing


def test_a_request_with_several_mistakes_shows_them_all_at_once_in_the_readers_language(
    app: App, clock: ManualClock, site: FastAPI
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    mistakes = {"name": "", "email": "jaan-at-example", "question": "  ", "region": "Atlantis"}
    expected = {
        "et": ["Täida see väli.", "Kirjuta e-posti aadress", "Vali piirkond", "Täida see väli."],
        "en": ["Fill in this field.", "Write an email address", "Choose a region", "Fill in"],
    }
    for language, words in expected.items():
        client = browser(site)
        client.get(f"/?lang={language}")
        page = client.post("/request", data=request_form(client, mentor_id, **mistakes))
        assert page.status_code == 422
        errors = re.findall(r'<p class="error" id="([a-z_]+)-error">([^<]*)</p>', page.text)
        # In the form's order, each beside its field, none in the service's English.
        assert [field for field, _ in errors] == ["name", "email", "region", "question"]
        assert all(said.startswith(word) for (_, said), word in zip(errors, words, strict=True))
        # Listed at the top too, where the focus lands, each a link to its field.
        summary = page.text.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
        assert "autofocus" in page.text.split('id="error-summary"', 1)[0].rsplit("<div", 1)[1]
        linked = re.findall(r'<a href="#([a-z_]+)">([^<]*)</a>', summary)
        assert [field for field, _ in linked] == ["name", "email", "region", "question"]
        assert linked[1][1].startswith({"et": "E-post: ", "en": "Email: "}[language])
        assert 'value="jaan-at-example"' in page.text
        assert 'value="Pärnu Sotsiaalkeskus"' in page.text
    with app.read() as tx:
        assert tx.session.scalar(select(func.count()).select_from(PendingSubmission)) == 0


def test_a_request_names_the_mentees_organisation_so_the_horizontal_rule_can_hold(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    page = web.post("/request", data=request_form(web, mentor_id, organisation=" "))
    assert page.status_code == 422
    errors = re.findall(r'<p class="error" id="([a-z_]+)-error">([^<]*)</p>', page.text)
    assert errors == [("organisation", "Täida see väli.")]
    with app.read() as tx:
        assert tx.session.scalar(select(func.count()).select_from(PendingSubmission)) == 0


def test_a_request_to_a_mentor_of_the_same_organisation_is_refused_in_plain_words(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    other_id = listed(
        app, clock, OTHER_MENTOR, "Kadri Kask", organisation="Viljandi Haigla", topics=["career"]
    )
    form = request_form(web, mentor_id, organisation="Tartu Linnavalitsus")
    page = web.post("/request", data=form)
    assert page.status_code == 409
    assert "See mentor töötab sinu organisatsioonis." in page.text
    assert "Teised sobivad mentorid" in page.text
    assert f'href="/mentors/{other_id}">Kadri Kask' in page.text
    assert QUESTION in page.text  # nothing typed is lost
    web.get("/?lang=en")
    page = web.post("/request", data=form | {"csrf": csrf_of(web.get("/apply"))})
    assert "This mentor works in your organisation." in page.text
    assert "organisatsioonis" not in page.text and "choose another" not in page.text


def test_a_request_to_a_paused_mentor_is_refused(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    bring(app, clock, submit(app, MENTOR, "Mari Mets"), "paused", MENTOR)
    page = web.post("/request", data=request_form(web, person_id(app, MENTOR)))
    assert page.status_code == 409
    assert "See mentor ei võta praegu pöördumisi vastu." in page.text


def test_a_request_without_the_csrf_token_is_forbidden(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    form = request_form(web, mentor_id)
    del form["csrf"]
    assert web.post("/request", data=form).status_code == 403
    form["csrf"] = "forged"
    assert web.post("/request", data=form).status_code == 403
    with app.unit() as tx:
        assert tx.session.scalar(select(func.count()).select_from(Case)) == 1


@pytest.mark.parametrize("mentor_id", ["9" * 30, "²"], ids=["enormous", "superscript"])
def test_a_request_naming_an_impossible_mentor_id_is_answered_not_crashed(
    site: FastAPI, mentor_id: str
) -> None:
    client = TestClient(site, follow_redirects=False, raise_server_exceptions=False)
    form = request_form(client, 1, mentor_id=mentor_id)
    assert client.post("/request", data=form).status_code == 422


# -- the application form --------------------------------------------------------------------


def test_outside_an_intake_round_the_form_gives_the_next_dates_and_a_subscribe_form(
    app: App, web: TestClient
) -> None:
    with app.unit() as tx:
        intake.create_round(
            tx, name="Kevadvoor 2027", opens="2027-03-01T09:00", closes="2027-03-31T17:00"
        )
    page = web.get("/apply")
    assert page.status_code == 200
    assert "01.03.2027 \N{EN DASH} 31.03.2027" in page.text
    assert 'action="/subscribe"' in page.text
    assert 'action="/apply"' not in page.text


def test_subscribing_from_the_closed_application_page_confirms_by_email(
    app: App, web: TestClient
) -> None:
    token = csrf_of(web.get("/apply"))
    page = web.post(
        "/subscribe", data={"csrf": token, "email": "huviline@example.org", "language": "et"}
    )
    assert page.status_code == 200
    assert "Saatsime kinnituslingi" in page.text
    bad = web.post("/subscribe", data={"csrf": token, "email": "huviline", "language": "et"})
    assert bad.status_code == 422
    assert 'value="huviline"' in bad.text
    assert web.post("/subscribe", data={"email": "x@example.org"}).status_code == 403


def application_form(web: TestClient, **overrides: Any) -> dict[str, Any]:
    token = csrf_of(web.get("/apply"))
    form: dict[str, Any] = {
        "csrf": token,
        "name": "Anne Aas",
        "email": "anne.aas@example.org",
        "language": "et",
        "organisation": "Narva Sotsiaalabikeskus",
        "region": "Ida-Virumaa",
        "degree_level": "master",
        "degree_field": "sotsiaaltöö",
        "degree_in_social_work": "on",
        "years_in_social_field": "9",
        "regions": ["Ida-Virumaa", "Lääne-Virumaa"],
        "credential_kind_0": "coach",
        "credential_issuer_0": "Eesti Coachide Assotsiatsioon",
        "credential_year_0": "2019",
        "credential_valid_0": "",
        "topics": ["career", "best_practice_network"],
        "background": "Perelepitus ja võrgustikutöö Ida-Virumaal.",
        "languages": ["et", "en"],
        "formats": ["online"],
        "capacity": "3",
        "fee_note": "Tasuta.",
    }
    form.update(overrides)
    return form


def test_inside_an_intake_round_a_valid_application_opens_a_case(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)
    assert 'action="/apply"' in web.get("/apply").text
    applied = web.post("/apply", data=application_form(web))
    assert applied.status_code == 200
    assert "Kinnita avaldus e-postist" in applied.text
    page = confirm_by_email(web, app, "anne.aas@example.org")
    assert page.status_code == 200
    assert "Avaldus on esitatud" in page.text
    ref = re.search(r"A-\d+", page.text)
    assert ref, page.text
    assert state_of(app, ref.group(0)) == "submitted"
    with app.unit() as tx:
        _, subject = load_case(tx, ref.group(0))
        assert isinstance(subject, Application)
        assert subject.person.email == "anne.aas@example.org"
        assert subject.intake_round_id is not None
        profile = subject.person.profile
        assert profile is not None
        assert profile.topics == ["career", "best_practice_network"]
        assert profile.regions == ["Ida-Virumaa", "Lääne-Virumaa"]
        assert [c.issuer for c in profile.credentials] == ["Eesti Coachide Assotsiatsioon"]


def test_an_application_can_declare_several_certificates_and_skips_empty_rows(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)
    second = {
        "credential_kind_2": "supervisor",
        "credential_issuer_2": "Eesti Supervisiooni ja Coachingu Ühing",
        "credential_year_2": "2016",
        "credential_valid_2": "2027-06-30",
    }
    assert web.post("/apply", data=application_form(web, **second)).status_code == 200
    page = confirm_by_email(web, app, "anne.aas@example.org")
    ref = re.search(r"A-\d+", page.text)
    assert page.status_code == 200 and ref, page.text
    with app.unit() as tx:
        _, subject = load_case(tx, ref.group(0))
        assert isinstance(subject, Application) and subject.person.profile
        declared = [
            (c.kind, c.issuer, c.year, c.valid_until) for c in subject.person.profile.credentials
        ]
        assert declared == [
            ("coach", "Eesti Coachide Assotsiatsioon", 2019, None),
            ("supervisor", "Eesti Supervisiooni ja Coachingu Ühing", 2016, date(2027, 6, 30)),
        ]
        assert sorted(e.kind for e in subject.evidence).count("credential") == 2


def test_an_application_with_several_mistakes_shows_them_all_at_once(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)
    form = application_form(web, name="", background="", years_in_social_field="many")
    form["topics"] = []
    page = web.post("/apply", data=form)
    assert page.status_code == 422
    errors = dict(re.findall(r'<p class="error" id="([a-z_]+)-error">([^<]*)</p>', page.text))
    assert errors == {
        "name": "Täida see väli.",
        "years_in_social_field": "Kirjuta täisarv.",
        "topics": "Vali vähemalt üks.",
        "background": "Täida see väli.",
    }
    summary = page.text.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
    linked = re.findall(r'<a href="#([a-z_]+)">([^<]*)</a>', summary)
    assert [field for field, _ in linked] == list(errors)
    assert all(f'id="{field}"' in page.text for field, _ in linked)  # each link has its target


def test_an_application_with_a_missing_field_keeps_everything_typed(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)
    page = web.post("/apply", data=application_form(web, background=""))
    assert page.status_code == 422
    field = page.text.split('<label for="background">', 1)[1].split('<div class="field', 1)[0]
    assert 'id="background-error"' in field
    assert "Täida see väli." in field
    for typed in (
        'value="Anne Aas"',
        'value="anne.aas@example.org"',
        'value="Narva Sotsiaalabikeskus"',
        'value="Ida-Virumaa"',
        'value="sotsiaaltöö"',
        'value="9"',
        'value="Eesti Coachide Assotsiatsioon"',
        'value="2019"',
        'value="3"',
        'value="master" selected',
        'value="coach" selected',
        'name="degree_in_social_work" checked',
        'value="career" checked',
        'value="best_practice_network" checked',
        'name="languages" value="en" checked',
        'name="regions" value="Lääne-Virumaa" checked',
        "Tasuta.",
    ):
        assert typed in page.text, typed
    assert 'value="change_at_work" checked' not in page.text
    assert 'name="formats" value="in_person" checked' not in page.text
    with app.unit() as tx:
        assert tx.session.scalar(select(func.count()).select_from(Case)) == 0


@web_layer_only
def test_an_application_with_a_bad_certificate_year_marks_that_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)
    page = web.post(
        "/apply",
        data=application_form(
            web,
            credential_kind_1="mentor",
            credential_issuer_1="Mentorite Kool",
            credential_year_1="1800",
            credential_valid_2="2030-01-01",  # a row with only a date in it
        ),
    )
    assert page.status_code == 422
    field = page.text.split('<label for="credential_year_1">', 1)[1].split("</div>", 1)[0]
    assert "Vähemalt 1950." in field
    assert 'value="1800"' in field
    assert 'value="2019"' in page.text and 'value="Mentorite Kool"' in page.text
    assert 'value="2030-01-01"' in page.text


def test_a_coordinator_enters_an_application_on_someones_behalf_outside_a_round(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    assert 'action="/apply"' not in web.get("/apply").text  # no round is open
    login(web, COORDINATOR)
    token = csrf_of(web.get("/console/applications/new"))
    bad = web.post("/console/applications", data=application_form(web, csrf=token, email="anne"))
    assert bad.status_code == 422
    assert 'id="email-error"' in bad.text and 'value="Narva Sotsiaalabikeskus"' in bad.text

    entered = web.post("/console/applications", data=application_form(web, csrf=token))
    assert entered.status_code == 303
    ref = entered.headers["location"].rsplit("/", 1)[1]
    assert state_of(app, ref) == "submitted"
    coordinator = person_id(app, COORDINATOR)
    with app.unit() as tx:
        case, subject = load_case(tx, ref)
        assert isinstance(subject, Application)
        assert subject.person.email == "anne.aas@example.org"
        assert subject.intake_round_id is None
        (event,) = tx.session.scalars(select(AuditEvent).where(AuditEvent.case_id == case.id))
        assert (event.actor_role, event.actor_id) == ("coordinator", coordinator)
        mail = tx.session.scalars(
            select(OutboxMessage.to_email).where(OutboxMessage.case_id == case.id)
        ).all()
        assert "anne.aas@example.org" in mail


def test_an_application_without_the_csrf_token_is_forbidden(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)
    form = application_form(web)
    del form["csrf"]
    assert web.post("/apply", data=form).status_code == 403


# -- authorization: the console and the committee view ---------------------------------------

COORDINATOR_PAGES = [
    "/console",
    "/console/cases",
    "/console/cases/{ref}",
    "/console/outbox",
    "/console/applications/new",
]


def test_an_anonymous_visitor_is_sent_to_the_login_from_every_console_page(
    app: App, web: TestClient
) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    for path in [*COORDINATOR_PAGES, "/console/committee"]:
        url = path.format(ref=ref)
        answer = web.get(url)
        assert answer.status_code == 303, url
        assert answer.headers["location"] == f"/console/login?next={url}"
    token = csrf_of(web.get("/console/login"))
    for url in (
        f"/console/cases/{ref}/advance",
        "/console/outbox/1/retry",
        f"/console/committee/{ref}/vote",
        "/console/applications",
    ):
        answer = web.post(url, data={"csrf": token, "trigger": "begin_review", "vote": "approve"})
        assert answer.status_code == 303, url
        assert answer.headers["location"].startswith("/console/login")
    assert state_of(app, ref) == "submitted"


def interview(app: App, clock: ManualClock, email: str, name: str, committee: list[str]) -> str:
    """An application in `interview`, its interview scheduled in five days with `committee`."""
    ref = submit(app, email, name)
    bring(app, clock, ref, "interview", email)
    scenarios.step(
        app,
        ref,
        "schedule_interview",
        COORDINATOR,
        interview_at=clock.now + timedelta(days=5),
        place="Tallinn, Lastekodu 12",
        committee=committee,
    )
    return ref


@pytest.fixture
def interviews(app: App, clock: ManualClock) -> tuple[str, str]:
    """Two interviews: the first with the whole committee, the second without COMMITTEE[0]."""
    with app.unit() as tx:
        accounts.add_user(
            tx,
            name="Neljas Liige",
            email="neljas@esta.example",
            role="committee",
            password=PASSWORD,
        )
    mine = interview(app, clock, "anne.aas@example.org", "Anne Aas", COMMITTEE)
    others = interview(
        app, clock, "olev.org@example.org", "Olev Org", [*COMMITTEE[1:], "neljas@esta.example"]
    )
    return mine, others


def test_a_committee_member_may_not_open_coordinator_pages(
    app: App, web: TestClient, interviews: tuple[str, str]
) -> None:
    mine, _ = interviews
    assert login(web, COMMITTEE[0]).headers["location"] == "/console/committee"
    for path in COORDINATOR_PAGES:
        assert web.get(path.format(ref=mine)).status_code == 403, path
    token = csrf_of(web.get("/console/committee"))
    answer = web.post(
        f"/console/cases/{mine}/advance",
        data={"csrf": token, "trigger": "approve", "version": str(version_of(app, mine))},
    )
    assert answer.status_code == 403
    assert web.post("/console/outbox/1/retry", data={"csrf": token}).status_code == 403
    assert state_of(app, mine) == "interview"


def test_a_committee_member_sees_only_the_interviews_they_sit_on(
    web: TestClient, interviews: tuple[str, str]
) -> None:
    mine, others = interviews
    login(web, COMMITTEE[0])
    page = web.get("/console/committee")
    assert page.status_code == 200
    assert "Anne Aas" in page.text and mine in page.text
    assert "Olev Org" not in page.text and others not in page.text
    assert "Tallinn, Lastekodu 12" in page.text
    assert "supervisor, Eesti Supervisiooni ja Coachingu Ühing, 2018" in page.text  # evidence


@pytest.mark.parametrize("backend", ["sqlite"])
def test_staff_log_in_and_read_cases_while_another_process_holds_the_write_lock(
    app: App, web: TestClient, interviews: tuple[str, str]
) -> None:
    """Reading takes no write lock: with another process writing, the pages still answer (a
    write would wait its 0.3 s here, then be refused with a 503). Logging in writes the
    session's row (tests/test_sessions.py), so it comes first."""
    mine, _ = interviews
    coordinator = (COORDINATOR, PASSWORD)
    assert login(web, COMMITTEE[0]).headers["location"] == "/console/committee"
    with write_lock_held(app):
        listed = web.get("/api/v1/cases", auth=coordinator)
        one = web.get(f"/api/v1/cases/{mine}", auth=coordinator)
        seats = web.get("/console/committee")
        application_form = web.get("/apply")
    assert listed.status_code == 200 and mine in {case["id"] for case in listed.json()}
    assert one.status_code == 200 and one.json()["state"] == "interview"
    assert seats.status_code == 200 and "Anne Aas" in seats.text
    assert application_form.status_code == 200


def test_a_committee_member_votes_with_notes_after_the_interview(
    app: App, clock: ManualClock, web: TestClient, interviews: tuple[str, str]
) -> None:
    mine, _ = interviews
    clock.advance(days=6)
    login(web, COMMITTEE[0])
    token = csrf_of(web.get("/console/committee"))
    answer = web.post(
        f"/console/committee/{mine}/vote",
        data={"csrf": token, "vote": "approve", "notes": "Valmis ja kogenud."},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/committee"
    page = web.get("/console/committee")
    assert "<strong>approve</strong> — Valmis ja kogenud." in page.text
    assert seats(app, mine) == {COMMITTEE[0]: "approve", COMMITTEE[1]: None, COMMITTEE[2]: None}


def test_a_committee_member_with_a_conflict_of_interest_recuses(
    app: App, site: FastAPI, interviews: tuple[str, str]
) -> None:
    mine, _ = interviews
    member = browser(site)
    login(member, COMMITTEE[1])
    token = csrf_of(member.get("/console/committee"))
    answer = member.post(
        f"/console/committee/{mine}/vote",
        data={"csrf": token, "vote": "recuse", "notes": "Endine kolleeg."},
    )
    assert answer.status_code == 303
    assert "<strong>recuse</strong>" in member.get("/console/committee").text
    assert seats(app, mine)[COMMITTEE[1]] == "recuse"


def test_a_committee_member_cannot_vote_on_an_interview_they_do_not_sit_on(
    app: App, clock: ManualClock, web: TestClient, interviews: tuple[str, str]
) -> None:
    _, others = interviews
    clock.advance(days=6)
    login(web, COMMITTEE[0])
    token = csrf_of(web.get("/console/committee"))
    web.post(f"/console/committee/{others}/vote", data={"csrf": token, "vote": "decline"})
    assert set(seats(app, others).values()) == {None}


def test_a_committee_vote_without_the_csrf_token_is_forbidden(
    app: App, clock: ManualClock, web: TestClient, interviews: tuple[str, str]
) -> None:
    mine, _ = interviews
    clock.advance(days=6)
    login(web, COMMITTEE[0])
    answer = web.post(f"/console/committee/{mine}/vote", data={"vote": "approve"})
    assert answer.status_code == 403
    assert seats(app, mine)[COMMITTEE[0]] is None


@web_layer_only
def test_a_refused_vote_tells_the_member_why(
    app: App, web: TestClient, interviews: tuple[str, str]
) -> None:
    mine, _ = interviews  # the interview is still five days away
    login(web, COMMITTEE[0])
    token = csrf_of(web.get("/console/committee"))
    web.post(f"/console/committee/{mine}/vote", data={"csrf": token, "vote": "approve"})
    assert seats(app, mine)[COMMITTEE[0]] is None
    assert "the committee decides after the interview" in web.get("/console/committee").text


def seats(app: App, ref: str) -> dict[str, str | None]:
    with app.unit() as tx:
        _, subject = load_case(tx, ref)
        rows = tx.session.execute(
            select(Person.email, CommitteeVote.vote)
            .join(CommitteeVote, CommitteeVote.member_id == Person.id)
            .where(CommitteeVote.application_id == subject.id)
        )
        return {email: vote for email, vote in rows}


def test_a_coordinator_sees_the_queue_the_cases_a_case_and_the_outbox(
    app: App, web: TestClient
) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    assert login(web, COORDINATOR).headers["location"] == "/console"
    queue = web.get("/console")
    assert queue.status_code == 200
    assert f'href="/console/cases/{ref}"' in queue.text
    assert "Alusta avalduse läbivaatamist" in queue.text  # the action needed
    cases = web.get("/console/cases")
    assert cases.status_code == 200 and "Anne Aas" in cases.text
    assert web.get("/console/cases", params={"q": ref.lower()}).headers["location"] == (
        f"/console/cases/{ref}"
    )
    assert ref in web.get("/console/cases", params={"q": "anne"}).text
    case = web.get(f"/console/cases/{ref}")
    assert case.status_code == 200
    assert '<svg class="diagram"' in case.text
    current = re.findall(r'<g aria-current="step">.*?<text[^>]*>([^<]+)</text></g>', case.text)
    assert current == ["Esitatud"]
    assert 'value="begin_review"' in case.text  # the coordinator's next step
    outbox = web.get("/console/outbox")
    assert outbox.status_code == 200
    assert "application_received" in outbox.text and "anne.aas@example.org" in outbox.text
    committee = web.get("/console/committee")
    assert committee.status_code == 200


def test_an_unknown_case_page_is_not_found(web: TestClient) -> None:
    login(web, COORDINATOR)
    assert web.get("/console/cases/A-4242").status_code == 404
    assert web.get("/console/cases/nonsense").status_code == 404


def test_the_case_page_and_the_case_api_never_show_the_question_or_the_agreement(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = relation(app, clock, "reframed")
    login(web, COORDINATOR)
    page = web.get(f"/console/cases/{ref}")
    assert page.status_code == 200
    assert "Jaan Jõgi" in page.text  # the people and the timeline are there
    api = web.get(f"/api/v1/cases/{ref}", auth=(COORDINATOR, PASSWORD))
    assert api.status_code == 200
    for secret in (QUESTION, NEW_QUESTION, GOAL, "kord kuus"):
        assert secret not in page.text, secret
        assert secret not in api.text, secret


# -- login -----------------------------------------------------------------------------------


@web_layer_only
def test_a_wrong_password_gets_the_login_page_again_with_401(web: TestClient) -> None:
    page = login(web, COORDINATOR, "vale-parool-12345")
    assert page.status_code == 401
    assert "wrong email or password" in page.text
    assert login(web, "nobody@example.org").status_code == 401
    assert web.get("/console").status_code == 303


@web_layer_only
def test_after_five_wrong_passwords_even_the_right_one_is_refused(
    web: TestClient, clock: ManualClock
) -> None:
    for _ in range(5):
        assert login(web, COORDINATOR, "vale-parool-12345").status_code == 401
        clock.advance(minutes=2, seconds=1)  # past the growing waits between tries
    page = login(web, COORDINATOR)
    assert page.status_code == 429
    assert web.get("/console").status_code == 303


def test_the_login_throttle_counts_across_web_processes_and_the_api_and_then_lifts(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    """Two web processes on one database, and the API's Basic login: one count for all."""
    other_process = TestClient(create(app), follow_redirects=False)
    for client in (web, web, other_process):
        assert login(client, COORDINATOR, "vale-parool-12345").status_code == 401
        clock.advance(minutes=2, seconds=30)  # past the growing waits between tries
    api = TestClient(create(app))
    for _ in range(2):
        wrong = api.get("/api/v1/cases", auth=(COORDINATOR, "vale-parool-12345"))
        assert wrong.status_code == 401
        clock.advance(minutes=2, seconds=30)

    assert login(other_process, COORDINATOR).status_code == 429
    refused = api.get("/api/v1/cases", auth=(COORDINATOR, PASSWORD))
    # Until the first of the five failures, 12.5 minutes ago, leaves the 15-minute window.
    assert refused.status_code == 429 and refused.headers["retry-after"] == "150"

    clock.advance(minutes=16)
    assert login(web, COORDINATOR).status_code == 303
    assert api.get("/api/v1/cases", auth=(COORDINATOR, PASSWORD)).status_code == 200


@web_layer_only
def test_the_session_cookie_is_httponly_and_samesite_lax(web: TestClient) -> None:
    answer = login(web, COORDINATOR)
    assert answer.status_code == 303
    cookies = [c.lower() for c in answer.headers.get_list("set-cookie")]
    session = [c for c in cookies if c.startswith("mentorlus=")]
    assert len(session) == 1
    assert "httponly" in session[0]
    assert "samesite=lax" in session[0]


@web_layer_only
def test_the_session_cookie_is_secure_when_the_site_runs_on_https(app: App) -> None:
    secure = replace(app, settings=replace(app.settings, base_url="https://mentorlus.example"))
    with app.unit() as tx:
        accounts.add_user(tx, name="Liis", email=COORDINATOR, role="coordinator", password=PASSWORD)
    client = TestClient(create(secure), base_url="https://testserver", follow_redirects=False)
    answer = login(client, COORDINATOR)
    assert answer.status_code == 303
    session = [c.lower() for c in answer.headers.get_list("set-cookie")]
    assert any(c.startswith("mentorlus=") and "; secure" in c for c in session)


@web_layer_only
def test_a_login_without_the_csrf_token_is_forbidden(web: TestClient) -> None:
    web.get("/console/login")
    answer = web.post("/console/login", data={"email": COORDINATOR, "password": PASSWORD})
    assert answer.status_code == 403
    assert web.get("/console").status_code == 303


@web_layer_only
def test_login_never_redirects_to_another_site(web: TestClient) -> None:
    token = csrf_of(web.get("/console/login"))
    answer = web.post(
        "/console/login",
        data={
            "csrf": token,
            "email": COORDINATOR,
            "password": PASSWORD,
            "next": "//evil.example/",
        },
    )
    assert answer.headers["location"] == "/console"


@web_layer_only
def test_a_stored_password_is_an_argon2_hash(app: App, site: FastAPI) -> None:
    with app.unit() as tx:
        stored = tx.session.scalar(select(Person.password_hash).where(Person.email == COORDINATOR))
    assert stored is not None and stored.startswith("$argon2id$")
    assert PASSWORD not in stored


# -- advancing a case from its page ----------------------------------------------------------


def step_form(web: TestClient, ref: str, trigger: str, **fields: str) -> dict[str, str]:
    page = web.get(f"/console/cases/{ref}")
    form = {"csrf": csrf_of(page), "trigger": trigger}
    version = VERSION.search(page.text)
    assert version
    form["version"] = version.group(1)
    form.update({f"f_{name}": value for name, value in fields.items()})
    return form


def test_a_coordinator_advances_a_case_from_its_page(app: App, web: TestClient) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    login(web, COORDINATOR)
    answer = web.post(f"/console/cases/{ref}/advance", data=step_form(web, ref, "begin_review"))
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/cases/{ref}"
    assert state_of(app, ref) == "eligibility"
    page = web.get(f"/console/cases/{ref}")
    assert re.findall(r'<g aria-current="step">.*?<text[^>]*>([^<]+)</text></g>', page.text) == [
        "Nõuetele vastavuse kontroll"
    ]


def test_a_refused_step_names_the_rule_and_keeps_what_was_typed(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    bring(app, clock, ref, "interview", "anne.aas@example.org")
    version = version_of(app, ref)
    login(web, COORDINATOR)
    form = step_form(
        web,
        ref,
        "schedule_interview",
        interview_at="2026-10-01T10:00",
        place="Tallinn, Lastekodu 12",
        committee=f"{COMMITTEE[0]}, {COMMITTEE[1]}",
    )
    page = web.post(f"/console/cases/{ref}/advance", data=form)
    assert page.status_code == 422
    assert "committee_size" in page.text
    assert "the evaluation committee has 3 members; 2 given" in page.text
    assert 'value="2026-10-01T10:00"' in page.text
    assert 'value="Tallinn, Lastekodu 12"' in page.text
    assert version_of(app, ref) == version


def test_a_step_missing_a_required_field_names_the_field(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    bring(app, clock, ref, "eligibility", "anne.aas@example.org")
    login(web, COORDINATOR)
    page = web.post(f"/console/cases/{ref}/advance", data=step_form(web, ref, "mark_ineligible"))
    assert page.status_code == 422
    assert "reason" in page.text and "is required for this step" in page.text
    assert state_of(app, ref) == "eligibility"


def test_a_step_on_a_stale_page_says_someone_else_changed_the_case(
    app: App, web: TestClient
) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    login(web, COORDINATOR)
    form = step_form(web, ref, "begin_review")
    scenarios.step(app, ref, "begin_review", COORDINATOR)  # another coordinator was quicker
    page = web.post(f"/console/cases/{ref}/advance", data=form)
    assert page.status_code == 409
    assert "changed by someone else" in page.text
    assert f"<h1>{ref} — Nõuetele vastavuse kontroll</h1>" in page.text  # the new state
    assert re.findall(r'<g aria-current="step">.*?<text[^>]*>([^<]+)</text></g>', page.text) == [
        "Nõuetele vastavuse kontroll"
    ]


def test_a_step_without_the_csrf_token_is_forbidden(app: App, web: TestClient) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    login(web, COORDINATOR)
    form = step_form(web, ref, "begin_review")
    del form["csrf"]
    assert web.post(f"/console/cases/{ref}/advance", data=form).status_code == 403
    assert state_of(app, ref) == "submitted"


def test_a_coordinator_retries_a_failed_email_from_the_outbox(app: App, web: TestClient) -> None:
    submit(app, "anne.aas@example.org", "Anne Aas")
    with app.unit() as tx:
        message = tx.session.scalars(select(OutboxMessage)).first()
        assert message is not None
        message.status, message.attempts, message.last_error = "failed", 5, "550 no such user"
        message_id = message.id
    login(web, COORDINATOR)
    page = web.get("/console/outbox")
    assert "550 no such user" in page.text
    answer = web.post(f"/console/outbox/{message_id}/retry", data={"csrf": csrf_of(page)})
    assert answer.status_code == 303
    with app.unit() as tx:
        retried = tx.session.get(OutboxMessage, message_id)
        assert retried is not None
        assert (retried.status, retried.attempts) == ("pending", 0)


# -- the JSON API ----------------------------------------------------------------------------


def test_the_api_directory_is_public_and_filters_like_the_page(
    web: TestClient, directory: dict[str, int]
) -> None:
    everyone = web.get("/api/v1/mentors")
    assert everyone.status_code == 200
    assert {m["name"] for m in everyone.json()} == {"Mari Mets", "Tiit Tamm"}
    mari = next(m for m in everyone.json() if m["name"] == "Mari Mets")
    assert mari["id"] == directory["Mari Mets"]
    assert (mari["free_places"], mari["can_mentor_managers"]) == (2, True)
    for params, expected in FILTERS:
        params = {k: "true" if v == "on" else v for k, v in params.items()}
        found = web.get("/api/v1/mentors", params=params)
        assert found.status_code == 200
        assert {m["name"] for m in found.json()} == expected, params


def test_the_api_shows_one_listed_mentor_and_no_one_else(
    web: TestClient, directory: dict[str, int]
) -> None:
    mari = web.get(f"/api/v1/mentors/{directory['Mari Mets']}")
    assert mari.status_code == 200
    assert mari.json()["topics"] == ["career", "change_at_work"]
    assert web.get(f"/api/v1/mentors/{directory['Peeter Paus']}").status_code == 404
    assert web.get("/api/v1/mentors/987654").status_code == 404


def test_the_api_takes_an_application_inside_an_intake_round(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    data = scenarios.applicant("anne.aas@example.org", "Anne Aas")
    closed = web.post("/api/v1/applications", json=data)
    assert closed.status_code == 422
    assert closed.json()["detail"]["rule"] == "intake_round_open"
    open_round(app, clock)
    held = web.post("/api/v1/applications", json=data)
    assert held.status_code == 202
    assert held.json()["status"] == "confirmation_sent"
    ref = re.search(r"A-\d+", confirm_by_email(web, app, "anne.aas@example.org").text)
    assert ref
    assert state_of(app, ref.group(0)) == "submitted"


def test_the_api_names_the_field_of_an_invalid_application(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    open_round(app, clock)
    data = scenarios.applicant("anne.aas@example.org", "Anne Aas", topics=["knitting"])
    answer = web.post("/api/v1/applications", json=data)
    assert answer.status_code == 422
    assert answer.json()["detail"]["field"].startswith("topics")
    answer = web.post("/api/v1/applications", json={"name": "Anne"})
    assert answer.status_code == 422
    assert answer.json()["detail"]["field"] == "email"


@web_layer_only
@pytest.mark.parametrize(
    "malformed",
    [{"credentials": ["supervisor"]}, {"documents": "diplom.pdf"}, {"regions": 5}],
    ids=["credentials", "documents", "regions"],
)
def test_the_api_answers_a_malformed_application_with_422(
    app: App, clock: ManualClock, site: FastAPI, malformed: dict[str, Any]
) -> None:
    open_round(app, clock)
    data = scenarios.applicant("anne.aas@example.org", "Anne Aas", **malformed)
    client = TestClient(site, raise_server_exceptions=False)
    assert client.post("/api/v1/applications", json=data).status_code == 422


def api_request(email: str, mentor_id: int, **overrides: Any) -> dict[str, Any]:
    """A request body for the public API: the mentor by their directory id."""
    data = {**scenarios.mentee(email, "Jaan Jõgi", MENTOR), "mentor_id": mentor_id, **overrides}
    del data["mentor"]
    return data


def test_the_api_takes_a_request_and_explains_a_refusal(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    mentor_id = listed(app, clock, MENTOR, "Mari Mets")
    bad = web.post("/api/v1/requests", json=api_request("jaan", mentor_id))
    assert bad.status_code == 422
    assert bad.json()["detail"]["field"] == "email"
    nameless = web.post("/api/v1/requests", json=api_request(MENTEE, mentor_id, organisation=""))
    assert nameless.status_code == 422
    assert nameless.json()["detail"]["field"] == "organisation"
    same = api_request(MENTEE, mentor_id, organisation="Tartu Linnavalitsus")
    refused = web.post("/api/v1/requests", json=same)
    assert refused.status_code == 422
    assert refused.json()["detail"]["rule"] == "different_organisation"
    assert "works in your organisation" in refused.json()["detail"]["reason"]
    held = web.post("/api/v1/requests", json=api_request(MENTEE, mentor_id))
    assert held.status_code == 202
    ref = re.search(r"M-\d+", confirm_by_email(web, app, MENTEE).text)
    assert ref
    assert state_of(app, ref.group(0)) == "requested"


def test_the_case_api_is_for_coordinators_only(app: App, web: TestClient) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    anonymous = web.get("/api/v1/cases")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer, Basic"
    assert web.get("/api/v1/cases", auth=(COORDINATOR, "vale-parool-12345")).status_code == 401
    assert web.get("/api/v1/cases", auth=(COMMITTEE[0], PASSWORD)).status_code == 403
    assert web.get(f"/api/v1/cases/{ref}", auth=(COMMITTEE[0], PASSWORD)).status_code == 403
    allowed = web.get("/api/v1/cases", auth=(COORDINATOR, PASSWORD))
    assert allowed.status_code == 200
    assert [c["id"] for c in allowed.json()] == [ref]
    assert (
        web.post(f"/api/v1/cases/{ref}/advance", json={"trigger": "begin_review"}).status_code
        == 401
    )
    assert state_of(app, ref) == "submitted"


def test_the_case_api_does_not_find_an_unknown_case(web: TestClient) -> None:
    for ref in ("A-4242", "M-1", "nonsense"):
        answer = web.get(f"/api/v1/cases/{ref}", auth=(COORDINATOR, PASSWORD))
        assert answer.status_code == 404, ref


@pytest.mark.parametrize("ref", ["A-²", "A-" + "9" * 20], ids=["superscript", "enormous"])
def test_the_case_api_does_not_find_a_case_id_that_cannot_exist(site: FastAPI, ref: str) -> None:
    client = TestClient(site, raise_server_exceptions=False)
    answer = client.get(f"/api/v1/cases/{ref}", auth=(COORDINATOR, PASSWORD))
    assert answer.status_code == 404


def test_the_case_api_advances_refuses_and_detects_conflicts(app: App, web: TestClient) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    coordinator = (COORDINATOR, PASSWORD)
    shown = web.get(f"/api/v1/cases/{ref}", auth=coordinator).json()
    assert [s["trigger"] for s in shown["next_steps"]] == ["begin_review", "withdraw"]
    moved = web.post(
        f"/api/v1/cases/{ref}/advance",
        json={"trigger": "begin_review", "expected_version": shown["version"]},
        auth=coordinator,
    )
    assert moved.status_code == 200
    assert moved.json() == {
        "id": ref,
        "trigger": "begin_review",
        "from": "submitted",
        "to": "eligibility",
    }
    refused = web.post(
        f"/api/v1/cases/{ref}/advance", json={"trigger": "mark_eligible"}, auth=coordinator
    )
    assert refused.status_code == 422
    assert refused.json()["detail"]["rule"] == "qualifications_met"
    stale = web.post(
        f"/api/v1/cases/{ref}/advance",
        json={"trigger": "request_info", "values": {"message": "?"}, "expected_version": 1},
        auth=coordinator,
    )
    assert stale.status_code == 409
    assert "changed by someone else" in stale.json()["detail"]
    unknown = web.post(
        "/api/v1/cases/A-4242/advance", json={"trigger": "begin_review"}, auth=coordinator
    )
    assert unknown.status_code == 404
    assert state_of(app, ref) == "eligibility"


@web_layer_only
@pytest.mark.parametrize("when", ["9999-12-31T12:00", "0001-01-02T00:00"])
def test_the_case_api_refuses_an_interview_date_at_the_end_of_the_calendar(
    app: App, clock: ManualClock, site: FastAPI, when: str
) -> None:
    ref = submit(app, "anne.aas@example.org", "Anne Aas")
    bring(app, clock, ref, "interview", "anne.aas@example.org")
    client = TestClient(site, raise_server_exceptions=False)
    values = {"interview_at": when, "place": "Tallinn", "committee": COMMITTEE}
    answer = client.post(
        f"/api/v1/cases/{ref}/advance",
        json={"trigger": "schedule_interview", "values": values},
        auth=(COORDINATOR, PASSWORD),
    )
    assert answer.status_code == 422


@web_layer_only
def test_the_openapi_document_lists_the_api_and_nothing_else(web: TestClient) -> None:
    document = web.get("/openapi.json")
    assert document.status_code == 200
    paths = set(document.json()["paths"])
    assert paths == {
        "/api/v1/mentors",
        "/api/v1/mentors/{person_id}",
        "/api/v1/applications",
        "/api/v1/requests",
        "/api/v1/cases",
        "/api/v1/cases/{ref}",
        "/api/v1/cases/{ref}/advance",
    }


def test_the_case_list_reads_the_same_number_of_statements_for_any_number_of_cases(
    app: App, clock: ManualClock
) -> None:
    mentor = "mari.mets@example.org"
    list_mentor(app, clock, mentor, "Mari Mets")
    statements: list[str] = []
    event.listen(app.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    counts = []
    for mentees in (2, 6):
        for index in range(mentees):
            scenarios.submit_request(
                app, scenarios.mentee(f"m{mentees}-{index}@example.org", f"Jaan {index}", mentor)
            )
        statements.clear()
        with app.read() as tx:
            listed_cases = queries.list_cases(tx, workflow="mentoring")
        counts.append(len(statements))
        assert {case["mentee"] for case in listed_cases} >= {f"Jaan {i}" for i in range(mentees)}
    assert counts[0] == counts[1], counts
