"""The console's intake-round and subscriber pages: coordinators only, changes with reasons."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.mail import bulk
from lifecycle.store.models import IntakeRound
from tests.conftest import COMMITTEE, COORDINATOR, STAFF_PASSWORD

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def login(client: TestClient, email: str) -> str:
    token = CSRF.search(client.get("/console/login").text)
    assert token
    client.post(
        "/console/login", data={"csrf": token.group(1), "email": email, "password": STAFF_PASSWORD}
    )
    found = CSRF.search(client.get("/").text)
    assert found
    return found.group(1)


def rounds(app: App) -> list[IntakeRound]:
    with app.unit() as tx:
        return list(tx.session.scalars(select(IntakeRound).order_by(IntakeRound.opens_at)))


def test_the_rounds_page_lists_the_scheduled_rounds(web: TestClient, app: App) -> None:
    login(web, COORDINATOR)
    page = web.get("/console/rounds")
    assert page.status_code == 200
    assert next(r.name for r in rounds(app)) in page.text


def test_a_coordinator_creates_moves_and_cancels_a_round_from_the_console(
    web: TestClient, app: App
) -> None:
    csrf = login(web, COORDINATOR)
    created = web.post(
        "/console/rounds",
        data={
            "csrf": csrf,
            "action": "create",
            "name": "Lisavoor",
            "opens": "2027-05-01T09:00",
            "closes": "2027-05-20T09:00",
        },
    )
    assert created.status_code == 303
    extra = next(r for r in rounds(app) if r.name == "Lisavoor")
    web.post(
        "/console/rounds",
        data={
            "csrf": csrf,
            "action": "move",
            "round": str(extra.id),
            "opens": "2027-05-02T09:00",
            "closes": "2027-05-25T09:00",
        },
    )
    moved = next(r for r in rounds(app) if r.id == extra.id)
    assert moved.closes_at.astimezone(app.settings.time_zone).day == 25
    web.post("/console/rounds", data={"csrf": csrf, "action": "cancel", "round": str(extra.id)})
    assert next(r for r in rounds(app) if r.id == extra.id).cancelled_at is not None


def test_a_refused_round_change_is_explained_on_the_page(web: TestClient, app: App) -> None:
    csrf = login(web, COORDINATOR)
    web.post(
        "/console/rounds",
        data={
            "csrf": csrf,
            "action": "create",
            "name": "Vale",
            "opens": "2027-05-20T09:00",
            "closes": "2027-05-01T09:00",
        },
    )
    page = web.get("/console/rounds")
    assert "must close after it opens" in page.text
    assert not any(r.name == "Vale" for r in rounds(app))
    web.post(
        "/console/rounds",
        data={"csrf": csrf, "action": "move", "round": "²", "opens": "x", "closes": "y"},
    )
    assert "choose a round" in web.get("/console/rounds").text


def test_round_changes_need_the_csrf_token(web: TestClient, app: App) -> None:
    login(web, COORDINATOR)
    refused = web.post(
        "/console/rounds",
        data={
            "action": "create",
            "name": "X",
            "opens": "2027-05-01T09:00",
            "closes": "2027-05-20T09:00",
        },
    )
    assert refused.status_code == 403


def test_the_subscribers_page_shows_who_confirmed_and_who_left(web: TestClient, app: App) -> None:
    with app.unit() as tx:
        bulk.subscribe(tx, email="tellija@example.org", language="et")
    login(web, COORDINATOR)
    page = web.get("/console/subscribers")
    assert page.status_code == 200 and "tellija@example.org" in page.text


@pytest.mark.parametrize("path", ["/console/rounds", "/console/subscribers"])
def test_only_coordinators_see_rounds_and_subscribers(web: TestClient, path: str) -> None:
    assert web.get(path).status_code == 303  # anonymous: to the login page
    login(web, COMMITTEE[0])
    assert web.get(path).status_code == 403
