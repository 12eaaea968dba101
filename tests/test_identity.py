"""Trust at the public edge: a public submission takes effect only when the owner of its address
confirms it, public answers tell nobody who exists, and the mail sent at a stranger's asking is
limited (SPEC §6a; lifecycle/cases/pending.py, lifecycle/web/confirm.py, lifecycle/web/limits.py).

Every test talks HTTP to the real web app (the conftest `web` fixture: a real SQLite file, or
PostgreSQL) as a browser without JavaScript or an API client does, and reads the outcome in the
database the service writes.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import func, select

from lifecycle.bootstrap import App
from lifecycle.cases import pending, services
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import InvalidInput
from lifecycle.privacy import erasure, export, retention
from lifecycle.store.models import (
    ActionToken,
    Case,
    Credential,
    MentorProfile,
    OutboxMessage,
    PendingSubmission,
    Person,
    Relation,
)
from lifecycle.web import limits
from lifecycle.web.app import create
from lifecycle.workflows import links
from tests.conftest import (
    COORDINATOR,
    bring,
    confirm_by_email,
    confirmation_link,
    list_mentor,
)
from tests.test_web import api_request, application_form, open_round, person_id, request_form

MENTOR = "mari.mets@example.org"  # Tartu Linnavalitsus
OTHER_MENTOR = "kadri.kask@example.org"  # Viljandi Haigla
RETIRED = "reet.ruus@example.org"
STRANGER = "uus.inimene@example.org"
CONFIRMATIONS = ("request_confirm", "application_confirm", "subscription_confirm")
# What a rewrite of someone else would type.
FORGED = {"name": "Võltsitud Nimi", "organisation": "Võlts OÜ", "region": "Välismaa"}


# -- helpers -----------------------------------------------------------------------------------


def stored(app: App) -> dict[str, list[tuple[Any, ...]]]:
    """Every person, profile and certificate row, column by column."""
    with app.read() as tx:
        return {
            model.__tablename__: [
                tuple(getattr(row, column.key) for column in model.__table__.columns)
                for row in tx.session.scalars(select(model).order_by(model.id))
            ]
            for model in (Person, MentorProfile, Credential)
        }


def cases(app: App) -> int:
    with app.read() as tx:
        return tx.session.scalar(select(func.count()).select_from(Case)) or 0


def mailed(app: App, email: str, templates: tuple[str, ...] = CONFIRMATIONS) -> int:
    with app.read() as tx:
        return (
            tx.session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.to_email == email, OutboxMessage.template.in_(templates))
            )
            or 0
        )


def masked(response: Response) -> tuple[int, str]:
    """The status and body, with what differs on every page (the CSRF token) or echoes a typed
    id (the mentor chosen) masked."""
    text = re.sub(r'name="csrf" value="[^"]+"', 'name="csrf" value="…"', response.text)
    return response.status_code, re.sub(r'name="mentor_id" value="[^"]*"', "mentor_id=…", text)


def csrf(response: Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, "no CSRF token"
    return found.group(1)


def ref_in(page: Response, prefix: str) -> str:
    found = re.search(rf"{prefix}-\d+", page.text)
    assert found, page.text
    return found.group(0)


def applicant(email: str, **overrides: Any) -> dict[str, Any]:
    """An application body for the public API (it is the service's own shape)."""
    return {**scenarios.applicant(email, "Anne Aas"), **overrides}


@pytest.fixture
def mentors(app: App, clock: ManualClock) -> dict[str, int]:
    """Two listed mentors and a retired one, by address: their person ids."""
    list_mentor(app, clock, MENTOR, "Mari Mets")
    list_mentor(
        app, clock, OTHER_MENTOR, "Kadri Kask", organisation="Viljandi Haigla", topics=["career"]
    )
    retired = scenarios.applicant(RETIRED, "Reet Ruus")
    bring(
        app,
        clock,
        scenarios.submit_application(app, retired, actor=COORDINATOR),
        "retired",
        RETIRED,
    )
    return {email: person_id(app, email) for email in (MENTOR, OTHER_MENTOR, RETIRED)}


def submit(way: str, web: TestClient, mentors: dict[str, int], email: str) -> Response:
    """A public submission with someone's address and someone else's details, one of four ways."""
    if way == "web request":
        form = request_form(web, mentors[MENTOR], email=email, **FORGED, language="en")
        return web.post("/request", data=form)
    if way == "api request":
        body = api_request(email, mentors[MENTOR], **FORGED, language="en")
        return web.post("/api/v1/requests", json=body)
    forged = {**FORGED, "topics": ["specific_situation"], "background": "Võlts taust."}
    if way == "web application":
        no_certificate = {
            "credential_kind_0": "",
            "credential_issuer_0": "",
            "credential_year_0": "",
        }
        form = application_form(web, email=email, **forged, **no_certificate, regions=["Välismaa"])
        return web.post("/apply", data=form)
    body = applicant(email, **forged, regions=["Välismaa"], credentials=[], language="en")
    return web.post("/api/v1/applications", json=body)


WAYS = {  # the four public submissions, and whose details each tries to rewrite
    "web request": COORDINATOR,
    "api request": COORDINATOR,
    "web application": RETIRED,
    "api application": RETIRED,
}


# -- identity is confirmed, never assumed ------------------------------------------------------


@pytest.mark.parametrize("way", WAYS)
def test_a_submission_with_a_known_address_changes_nothing_until_confirmed_nor_their_details(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int], way: str
) -> None:
    open_round(app, clock)
    victim = WAYS[way]
    before, opened = stored(app), cases(app)

    held = submit(way, web, mentors, victim)

    assert held.status_code in (200, 202), held.text
    assert (stored(app), cases(app)) == (before, opened)  # nobody's row, no case
    confirmed = confirm_by_email(web, app, victim)
    assert confirmed.status_code == 200, confirmed.text
    ref = ref_in(confirmed, "M" if "request" in way else "A")
    assert stored(app) == before  # name, organisation, region, language, profile, certificates
    with app.read() as tx:
        case = tx.session.get(Case, int(ref.split("-")[1]))
        assert case is not None and case.state in ("requested", "submitted")
        subject = case.subject
        owner = subject.mentee if isinstance(subject, Relation) else subject.person
        assert owner.email == victim


def test_a_request_from_a_new_address_reaches_the_mentor_only_once_confirmed(
    app: App, web: TestClient, mentors: dict[str, int]
) -> None:
    held = web.post("/request", data=request_form(web, mentors[MENTOR], email=STRANGER))
    assert held.status_code == 200
    assert "Kinnita pöördumine e-postist" in held.text
    assert mailed(app, STRANGER) == 1
    assert mailed(app, MENTOR, ("request_received",)) == 0

    scanner = TestClient(create(app), follow_redirects=False)  # a mail scanner opens the link
    opened = scanner.get(confirmation_link(app, STRANGER))
    assert opened.status_code == 303
    page = scanner.get(opened.headers["location"])
    assert page.status_code == 200 and "Kuidas kujundada oma karjääri" in page.text
    with app.read() as tx:
        assert tx.session.scalar(select(Person).where(Person.email == STRANGER)) is None
    assert mailed(app, MENTOR, ("request_received",)) == 0

    confirmed = confirm_by_email(web, app, STRANGER)
    assert confirmed.status_code == 200 and "Pöördumine on saadetud" in confirmed.text
    assert f"Pöördumise number: {ref_in(confirmed, 'M')}" in confirmed.text
    assert mailed(app, MENTOR, ("request_received",)) == 1
    with app.read() as tx:
        person = tx.session.scalar(select(Person).where(Person.email == STRANGER))
        assert person is not None
        assert (person.name, person.organisation, person.region) == (
            "Jaan Jõgi",
            "Pärnu Sotsiaalkeskus",
            "Pärnumaa",
        )


def test_a_confirmation_link_works_once_and_a_replay_makes_no_second_case(
    app: App, web: TestClient, mentors: dict[str, int]
) -> None:
    web.post("/request", data=request_form(web, mentors[MENTOR], email=STRANGER))
    link = confirmation_link(app, STRANGER)
    assert confirm_by_email(web, app, STRANGER).status_code == 200
    opened = cases(app)

    again = web.get(f"{link}/confirm")
    assert again.status_code == 200
    assert 'data-state="confirmed"' in again.text and "<button>" not in again.text
    replay = web.post(f"{link}/confirm", data={"csrf": csrf(web.get("/apply"))})
    assert replay.status_code == 303 and replay.headers["location"] == f"{link}/confirm"
    other = TestClient(create(app), follow_redirects=False)
    token = csrf(other.get("/apply"))
    assert other.post(f"{link}/confirm", data={"csrf": token}).status_code == 303
    assert cases(app) == opened
    assert mailed(app, MENTOR, ("request_received",)) == 1


def test_an_expired_confirmation_link_offers_to_send_the_request_again(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    web.post("/request", data=request_form(web, mentors[MENTOR], email=STRANGER))
    link = confirmation_link(app, STRANGER)
    clock.advance(days=2, minutes=1)

    page = web.get(f"{link}/confirm")
    assert page.status_code == 410
    assert 'data-state="expired"' in page.text
    assert f'href="/request?mentor={mentors[MENTOR]}">Saada pöördumine uuesti' in page.text
    assert web.post(f"{link}/confirm", data={"csrf": csrf(web.get("/apply"))}).status_code == 303
    assert cases(app) == 3  # the mentors' applications only

    again = web.post("/request", data=request_form(web, mentors[MENTOR], email=STRANGER))
    assert "Kinnita pöördumine e-postist" in again.text  # the expired one waits no longer
    assert confirm_by_email(web, app, STRANGER).status_code == 200
    assert cases(app) == 4


def test_what_depends_on_the_owners_cases_is_told_only_on_confirming(
    app: App, web: TestClient, mentors: dict[str, int]
) -> None:
    scenarios.submit_request(app, scenarios.mentee(STRANGER, "Jaan Jõgi", MENTOR))
    held = web.post("/request", data=request_form(web, mentors[OTHER_MENTOR], email=STRANGER))
    assert held.status_code == 200 and "open request" not in held.text

    refused = confirm_by_email(web, app, STRANGER)
    assert refused.status_code == 409
    assert "Sul on juba vastuseta pöördumine." in refused.text
    assert "<button>" in refused.text  # the link is not spent: it may be confirmed later
    assert cases(app) == 4


# -- public answers tell nobody who exists -----------------------------------------------------


def test_a_request_or_application_answers_the_same_for_an_unknown_and_a_known_address(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    open_round(app, clock)
    for way in WAYS:
        unknown = submit(way, web, mentors, f"{way.replace(' ', '.')}@example.org")
        known = submit(way, web, mentors, WAYS[way])
        assert masked(unknown) == masked(known), way
        assert unknown.status_code in (200, 202)


def test_an_unknown_mentor_and_someone_who_is_not_a_mentor_get_the_same_answer(
    app: App, web: TestClient, mentors: dict[str, int]
) -> None:
    coordinator = person_id(app, COORDINATOR)
    nobody = max(mentors.values()) + 1000
    pages = [
        web.post("/request", data=request_form(web, who, email=STRANGER))
        for who in (nobody, coordinator, mentors[RETIRED])
    ]
    assert masked(pages[0]) == masked(pages[1]) == masked(pages[2])
    assert pages[0].status_code == 422 and "Vali mentor mentorite loendist." in pages[0].text
    answers = [
        web.post("/api/v1/requests", json=api_request(STRANGER, who))
        for who in (nobody, coordinator, mentors[RETIRED])
    ]
    assert len({(a.status_code, a.text) for a in answers}) == 1
    assert answers[0].json() == {
        "detail": {"field": "mentor_id", "reason": "choose a mentor from the directory"}
    }
    assert mailed(app, STRANGER) == 0


def test_someone_elses_open_request_or_application_is_never_named(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    open_round(app, clock)
    asking, applying = "juba.ootab@example.org", "juba.kandideerib@example.org"
    scenarios.submit_request(app, scenarios.mentee(asking, "Juhendatav", MENTOR))
    scenarios.submit_application(app, applicant(applying), actor=COORDINATOR)
    pairs = {
        "web request": [
            web.post("/request", data=request_form(web, mentors[OTHER_MENTOR], email=email))
            for email in (asking, "uus.pooroja@example.org")
        ],
        "api request": [
            web.post("/api/v1/requests", json=api_request(email, mentors[OTHER_MENTOR]))
            for email in (asking, "uus.api@example.org")
        ],
        "web application": [
            web.post("/apply", data=application_form(web, email=email))
            for email in (applying, "uus.kandidaat@example.org")
        ],
        "api application": [
            web.post("/api/v1/applications", json=applicant(email))
            for email in (applying, "uus.kandidaat.api@example.org")
        ],
    }
    for way, (theirs, fresh) in pairs.items():
        assert masked(theirs) == masked(fresh), way
        assert theirs.status_code in (200, 202), (way, theirs.text)
        assert not re.search(r"\b[AM]-\d+|open request|already has", theirs.text), way


# -- limits on mail sent to strangers ----------------------------------------------------------


def test_while_one_confirmation_waits_a_second_submission_sends_no_second_email(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    open_round(app, clock)
    web.post("/request", data=request_form(web, mentors[MENTOR], email=STRANGER))
    second = web.post("/request", data=request_form(web, mentors[OTHER_MENTOR], email=STRANGER))
    assert second.status_code == 200 and "Kinnituslink on juba saadetud" in second.text
    first_api = web.post("/api/v1/applications", json=applicant(STRANGER))
    second_api = web.post("/api/v1/applications", json=applicant(STRANGER))
    assert (first_api.status_code, first_api.json()) == (second_api.status_code, second_api.json())
    assert mailed(app, STRANGER, ("request_confirm",)) == 1
    assert mailed(app, STRANGER, ("application_confirm",)) == 1

    token = csrf(web.get("/apply"))
    for _ in range(10):
        page = web.post("/subscribe", data={"csrf": token, "email": "huviline@example.org"})
        assert page.status_code == 200
    assert "juba saadetud kinnituslink" in page.text
    assert mailed(app, "huviline@example.org") == 1


def test_mail_to_one_address_is_limited_across_web_processes_in_the_readers_language(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    open_round(app, clock)
    other_process = TestClient(create(app), follow_redirects=False)
    web.post("/subscribe", data={"csrf": csrf(web.get("/apply")), "email": STRANGER})
    web.post("/request", data=request_form(web, mentors[MENTOR], email=STRANGER))
    other_process.post("/api/v1/applications", json=applicant(STRANGER))
    assert mailed(app, STRANGER) == limits.PER_ADDRESS
    # The newest, the application, no longer waits: a new one would be mailed.
    assert confirm_by_email(web, app, STRANGER).status_code == 200

    other_process.get("/?lang=en")
    refused = other_process.post("/apply", data=application_form(other_process, email=STRANGER))
    assert refused.status_code == 429
    assert "Too many emails" in refused.text and '<html lang="en">' in refused.text
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert mailed(app, STRANGER) == limits.PER_ADDRESS
    with app.read() as tx:  # nothing held for it either
        waiting = select(PendingSubmission).where(
            PendingSubmission.email == STRANGER, PendingSubmission.waiting.is_(True)
        )
        assert len(tx.session.scalars(waiting).all()) == 1  # the request's

    clock.advance(hours=1, minutes=1)
    again = web.post("/apply", data=application_form(web, email=STRANGER))
    assert again.status_code == 200 and "Kinnita avaldus e-postist" in again.text


def test_every_public_endpoint_that_sends_mail_stops_a_client_at_its_limit(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    scenarios.submit_request(app, scenarios.mentee(STRANGER, "Jaan Jõgi", MENTOR))
    expired = newest_link(app, MENTOR)  # the mentor's link to answer, left to expire
    clock.advance(days=15)
    open_round(app, clock)
    token = csrf(web.get("/apply"))
    for number in range(limits.PER_CLIENT):
        sent = web.post("/subscribe", data={"csrf": token, "email": f"tellija{number}@example.org"})
        assert sent.status_code == 200
    with app.read() as tx:
        before = tx.session.scalar(select(func.count()).select_from(OutboxMessage))

    answers = {
        "web request": web.post("/request", data=request_form(web, mentors[OTHER_MENTOR])),
        "web application": web.post("/apply", data=application_form(web, email="a@example.org")),
        "subscribe": web.post("/subscribe", data={"csrf": token, "email": "viimane@example.org"}),
        "fresh link": web.post(f"{expired}/fresh", data={"csrf": token}),
        "api request": web.post(
            "/api/v1/requests", json=api_request("b@example.org", mentors[OTHER_MENTOR])
        ),
        "api application": web.post("/api/v1/applications", json=applicant("c@example.org")),
    }
    for where, answer in answers.items():
        assert answer.status_code == 429, (where, answer.text)
        assert int(answer.headers["retry-after"]) > 0, where
    assert "Liiga palju kirju" in answers["web request"].text
    assert answers["api request"].json() == answers["api application"].json()
    assert "try again later" in answers["api request"].json()["detail"]
    with app.read() as tx:
        assert tx.session.scalar(select(func.count()).select_from(OutboxMessage)) == before
        assert tx.session.scalar(select(func.count()).select_from(PendingSubmission)) == 0


def newest_link(app: App, email: str) -> str:
    """The path of the newest link mailed to `email`."""
    with app.read() as tx:
        message = tx.session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.to_email == email, OutboxMessage.link_token_id.is_not(None))
            .order_by(OutboxMessage.id.desc())
        ).first()
        assert message is not None and message.link_token_id is not None
        token = tx.session.get(ActionToken, message.link_token_id)
        assert token is not None
        return links.url(token, tx.settings).removeprefix(tx.settings.base_url)


# -- regions come from the list ----------------------------------------------------------------


def test_a_region_is_chosen_from_the_counties_all_of_estonia_or_abroad(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    open_round(app, clock)
    with app.unit() as tx:
        for data in (
            {**applicant(STRANGER), "region": "Tartu"},
            {**applicant(STRANGER), "regions": ["Tartumaa", "Lõuna-Eesti"]},
        ):
            with pytest.raises(InvalidInput, match="is not a region on the list"):
                services.check_application(tx, data=data)
        request = scenarios.mentee(STRANGER, "Jaan Jõgi", MENTOR, region="Pärnu linn")
        with pytest.raises(InvalidInput) as refused:
            services.check_request(tx, data=request)
        assert refused.value.field == "region"
    form = web.get(f"/request?mentor={mentors[MENTOR]}&lang=en").text
    region = form.split('<select id="region" name="region"', 1)[1].split("</select>", 1)[0]
    assert '<option value="Kogu Eesti">All of Estonia</option>' in region
    assert '<option value="Välismaa">Abroad</option>' in region
    assert '<option value="Harjumaa">Harjumaa</option>' in region
    form = request_form(web, mentors[MENTOR], email=STRANGER, region="Tartu")
    typed = web.post("/request", data=form)
    assert typed.status_code == 422 and 'id="region-error"' in typed.text
    abroad = web.post("/apply", data=application_form(web, email=STRANGER, region="Välismaa"))
    assert abroad.status_code == 200


# -- privacy -----------------------------------------------------------------------------------


def test_held_submissions_are_exported_erased_and_deleted_once_expired(
    app: App, clock: ManualClock, web: TestClient, mentors: dict[str, int]
) -> None:
    web.post("/request", data=request_form(web, mentors[MENTOR], email=STRANGER))
    link = confirmation_link(app, STRANGER)
    with app.read() as tx:
        exported = export.export_person(tx, email=STRANGER)
    (held,) = exported["pending_submissions"]
    assert (held["kind"], held["email"]) == ("request", STRANGER)
    assert held["data"]["question"] == "Kuidas kujundada oma karjääri järgmised viis aastat?"
    assert link.removeprefix("/l/").split(".")[0] not in str(exported)  # never the token

    with app.unit() as tx:
        erased = erasure.erase_person(tx, email=STRANGER)
    assert erased["counts"]["pending_submissions"] == 1
    assert web.get(link).status_code == 404  # the link is gone with it
    with app.read() as tx:
        assert tx.session.scalar(select(func.count()).select_from(PendingSubmission)) == 0
        assert mailed(app, STRANGER) == 0  # the confirmation email is no longer to that address

    web.post("/request", data=request_form(web, mentors[MENTOR], email="teine@example.org"))
    for later, left in ((timedelta(0), 1), (pending.VALID_FOR + timedelta(minutes=1), 0)):
        clock.advance(seconds=later.total_seconds())
        with app.unit() as tx:  # the worker's nightly run
            retention.run_retention(tx)
            count = select(func.count()).select_from(PendingSubmission)
            assert tx.session.scalar(count) == left
