"""Staff sessions kept on the server, and link grants checked against their token on every
request: what ends a console login (logging out, a new password or role, `user remove`, idle
time, its length), and what ends what a followed email link lets its browser do (the link's
expiry, its grace after the first step, its person's erasure)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import event, select

from lifecycle.bootstrap import App
from lifecycle.cases import accounts
from lifecycle.cli.main import main
from lifecycle.demo.scenarios import ManualClock
from lifecycle.privacy import erasure
from lifecycle.store.models import Person, StaffSession
from lifecycle.web.app import create
from tests.conftest import (
    COMMITTEE,
    COORDINATOR,
    STAFF_PASSWORD,
    another_connection,
    list_mentor,
)
from tests.test_web_links import (
    MENTEE,
    MENTOR,
    follow,
    hidden,
    link_in,
    relation_in,
    request,
    state_of,
    submit,
)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
LOGOUT_BUTTON = 'action="/console/logout"'


def browser(app: App) -> TestClient:
    """A browser of its own, with its own cookies."""
    return TestClient(create(app), follow_redirects=False)


def login(client: TestClient, email: str = COORDINATOR, password: str = STAFF_PASSWORD) -> Response:
    form = CSRF.search(client.get("/console/login").text)
    assert form
    return client.post(
        "/console/login", data={"csrf": form.group(1), "email": email, "password": password}
    )


def logged_in(app: App, email: str = COORDINATOR) -> TestClient:
    client = browser(app)
    assert login(client, email).status_code == 303
    return client


def console(client: TestClient) -> Response:
    return client.get("/console")


def sent_to_login(answer: Response) -> bool:
    return answer.status_code == 303 and answer.headers["location"].startswith("/console/login")


def sessions_of(app: App, email: str) -> list[StaffSession]:
    with app.read() as tx:
        return list(
            tx.session.scalars(select(StaffSession).join(Person).where(Person.email == email))
        )


# -- what ends a session -----------------------------------------------------------------------


def test_a_session_cookie_replayed_after_logout_is_refused(app: App, web: TestClient) -> None:
    assert login(web).status_code == 303
    assert console(web).status_code == 200
    saved = web.cookies["mentorlus"]
    token = hidden(console(web).text, "csrf")

    assert web.post("/console/logout", data={"csrf": token}).status_code == 303

    replay = browser(app)
    replay.cookies.set("mentorlus", saved)
    assert sent_to_login(console(replay))
    assert LOGOUT_BUTTON not in replay.get("/").text  # nobody is logged in, not even in name
    assert sessions_of(app, COORDINATOR) == []


def test_logging_out_ends_the_staff_members_sessions_in_every_browser(
    app: App, web: TestClient
) -> None:
    assert login(web).status_code == 303
    laptop = logged_in(app)
    other_member = logged_in(app, COMMITTEE[0])

    web.post("/console/logout", data={"csrf": hidden(console(web).text, "csrf")})

    assert sent_to_login(console(laptop))
    assert other_member.get("/console/committee").status_code == 200  # another's goes on
    # The API's Basic login checks the password on every call, with no session to end.
    assert web.get("/api/v1/cases", auth=(COORDINATOR, STAFF_PASSWORD)).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"role": "coordinator", "password": "uus-pikk-parool-2026"},  # a reset password
        {"role": "committee", "password": STAFF_PASSWORD},  # another role
    ],
    ids=["password", "role"],
)
def test_a_new_password_or_role_ends_every_session(
    app: App, web: TestClient, change: dict[str, str]
) -> None:
    assert login(web).status_code == 303
    other = logged_in(app)
    assert LOGOUT_BUTTON in web.get("/").text

    with app.unit() as tx:
        accounts.add_user(tx, name="Liis", email=COORDINATOR, **change)

    for client in (web, other):
        assert sent_to_login(console(client))
        assert sent_to_login(client.get("/console/committee"))
        assert LOGOUT_BUTTON not in client.get("/").text
    again = login(web, COORDINATOR, change["password"])
    expected = "/console" if change["role"] == "coordinator" else "/console/committee"
    assert again.headers["location"] == expected


def test_user_remove_takes_the_login_away_and_ends_its_sessions(
    app: App,
    web: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MENTORLUS_DATABASE__URL", app.settings.database_url)
    assert login(web, COMMITTEE[0]).status_code == 303
    assert web.get("/console/committee").status_code == 200

    assert main(["--json", "user", "remove", "--email", COMMITTEE[0].upper()]) == 0

    assert json.loads(capsys.readouterr().out) == {"email": COMMITTEE[0], "removed": True}
    assert sent_to_login(web.get("/console/committee"))
    assert login(browser(app), COMMITTEE[0]).status_code == 401
    with app.read() as tx:
        person = tx.session.scalar(select(Person).where(Person.email == COMMITTEE[0]))
        assert person is not None and (person.role, person.password_hash) == (None, None)
    assert sessions_of(app, COMMITTEE[0]) == []


def test_user_remove_explains_itself_and_refuses_what_is_no_staff_login(
    app: App, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as shown:
        main(["user", "remove", "--help"])
    assert shown.value.code == 0
    assert "end their console sessions" in capsys.readouterr().out
    with pytest.raises(SystemExit) as without_email:
        main(["user", "remove"])
    assert without_email.value.code == 2
    capsys.readouterr()

    monkeypatch.setenv("MENTORLUS_DATABASE__URL", app.settings.database_url)
    assert main(["user", "remove", "--email", "keegi@example.org"]) == 1
    assert capsys.readouterr().err == "not found: keegi@example.org has no staff login\n"
    assert main(["user", "remove", "--email", "not an address"]) == 1
    assert capsys.readouterr().err.startswith("invalid input: ")
    monkeypatch.setenv("MENTORLUS_CONFIG", "/nonexistent/config.toml")
    assert main(["user", "remove", "--email", COORDINATOR]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_erasing_a_coordinator_ends_their_sessions(app: App, web: TestClient) -> None:
    assert login(web).status_code == 303
    with app.unit() as tx:
        erasure.erase_person(tx, email=COORDINATOR, force=True)

    assert sent_to_login(console(web))
    with app.read() as tx:
        assert tx.session.scalars(select(StaffSession)).all() == []


# -- idle time, length, and what a page read writes --------------------------------------------


def test_an_idle_session_ends_and_a_busy_one_lasts_until_its_length(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    idle = app.settings.staff_session_idle
    assert login(web).status_code == 303
    clock.now += idle - timedelta(minutes=1)
    assert console(web).status_code == 200  # each request starts the idle time again
    clock.now += idle - timedelta(minutes=1)
    assert console(web).status_code == 200
    clock.now += idle + timedelta(minutes=1)
    assert sent_to_login(console(web))

    busy = logged_in(app)
    logged_in_at = clock.now
    while clock.now + timedelta(minutes=100) < logged_in_at + app.settings.staff_session_max:
        clock.advance(minutes=100)
        assert console(busy).status_code == 200
    clock.now = logged_in_at + app.settings.staff_session_max
    assert sent_to_login(console(busy))  # seen minutes ago, but 12 hours are up


@pytest.fixture
def session_writes(app: App) -> Iterator[list[str]]:
    """The statements that change a staff session's row, as the app issues them."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("UPDATE STAFF_SESSIONS"):
            seen.append(statement)

    event.listen(app.engine, "before_cursor_execute", record)
    yield seen
    event.remove(app.engine, "before_cursor_execute", record)


def test_a_sessions_latest_request_is_written_at_most_once_a_minute(
    app: App, clock: ManualClock, web: TestClient, session_writes: list[str]
) -> None:
    assert login(web).status_code == 303
    for seconds in (20, 20, 19):
        clock.advance(seconds=seconds)
        assert console(web).status_code == 200
    assert session_writes == []
    clock.advance(seconds=1)  # a minute since the login

    assert console(web).status_code == 200
    assert console(web).status_code == 200

    assert len(session_writes) == 1
    (session,) = sessions_of(app, COORDINATOR)
    assert session.last_seen_at == clock.now


@pytest.mark.parametrize("backend", ["sqlite"])
def test_reading_pages_waits_for_no_lock_when_the_latest_request_is_due(
    app: App, clock: ManualClock, web: TestClient
) -> None:
    """Another process writing: the once-a-minute write is left for a later request, at once
    (the app's connections would otherwise wait their 30 s for the lock)."""
    assert login(web).status_code == 303
    logged_in_at = clock.now
    clock.advance(minutes=5)
    locker = another_connection(app)
    locker.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        answers = [console(web), web.get("/")]
        waited = time.monotonic() - started
    finally:
        locker.execute("ROLLBACK")
        locker.close()

    assert [answer.status_code for answer in answers] == [200, 200]
    assert LOGOUT_BUTTON in answers[1].text
    assert waited < 5
    assert [s.last_seen_at for s in sessions_of(app, COORDINATOR)] == [logged_in_at]
    assert console(web).status_code == 200
    assert [s.last_seen_at for s in sessions_of(app, COORDINATOR)] == [clock.now]


def test_the_cookie_carries_only_the_sessions_random_id_and_the_table_its_hash(
    app: App, web: TestClient
) -> None:
    assert login(web).status_code == 303
    payload = web.cookies["mentorlus"].split(".")[0]
    content = json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4)))

    assert set(content) == {"staff_session"}
    (session,) = sessions_of(app, COORDINATOR)
    assert session.id == hashlib.sha256(content["staff_session"].encode()).hexdigest()


# -- link grants, checked against their token ---------------------------------------------------


@pytest.fixture
def mentor(app: App, clock: ManualClock) -> str:
    """MENTOR listed in the directory through the real application steps; their case ref."""
    return list_mentor(app, clock, MENTOR, "Mari Mets")


def test_a_grant_used_after_its_links_expiry_is_refused_as_expired(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    link = link_in(app, template="request_received", to=MENTOR, ref=ref)
    client = browser(app)
    page = follow(client, link)
    form = client.get(page).text

    clock.now += app.settings.link_valid + timedelta(minutes=1)

    shown = client.get(page)
    posted = client.post(
        page, data={"csrf": hidden(form, "csrf"), "trigger": "accept", "version": "1"}
    )
    for answer in (shown, posted):
        assert answer.status_code == 410 and 'data-rule="link_expired"' in answer.text
        assert f'action="{link}/fresh"' in answer.text
    assert "Juhendatav" not in shown.text  # nothing of the case is shown
    assert state_of(app, ref) == "requested"


def test_the_browser_that_spent_a_link_goes_on_only_within_the_grace(
    app: App, clock: ManualClock, mentor: str
) -> None:
    link = link_in(app, template="listed_welcome", to=MENTOR, ref=mentor)
    client = browser(app)
    page = follow(client, link)
    assert submit(client, page, "pause", reason="Puhkus").status_code == 303
    clock.now += app.settings.link_grace - timedelta(minutes=1)
    assert submit(client, page, "resume").status_code == 303  # the page's next step
    assert state_of(app, mentor) == "listed"
    form = client.get(page).text

    clock.advance(minutes=1)

    shown = client.get(page)
    posted = client.post(
        page,
        data={"csrf": hidden(form, "csrf"), "trigger": "pause", "version": hidden(form, "version")},
    )
    followed = client.get(link)
    for answer in (shown, posted, followed):
        assert answer.status_code == 410 and 'data-rule="link_used"' in answer.text
        assert f'action="{link}/fresh"' in answer.text
    assert state_of(app, mentor) == "listed"


def test_a_grant_used_after_its_persons_erasure_is_refused_as_not_valid(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "closed")
    client = browser(app)
    page = follow(client, link_in(app, template="feedback_request", to=MENTEE, ref=ref))
    form = client.get(page).text
    assert 'value="give_feedback"' in form

    with app.unit() as tx:
        erasure.erase_person(tx, email=MENTEE)

    shown = client.get(page)
    posted = client.post(
        page,
        data={
            "csrf": hidden(form, "csrf"),
            "trigger": "give_feedback",
            "version": hidden(form, "version"),
            "f_rating": "5",
        },
    )
    for answer in (shown, posted):
        assert answer.status_code == 404 and 'data-rule="link_invalid"' in answer.text
        assert "/fresh" not in answer.text
        assert answer.headers["content-type"].startswith("text/html")
    assert "erased-" not in shown.text
