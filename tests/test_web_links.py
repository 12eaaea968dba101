"""The pages behind email links, over HTTP: follow the link from the real outbox row, then act.

Each test lists a mentor through the real application steps, drives cases with `scenarios`,
reads the link out of the email that was queued, and plays the reader's browser with a
TestClient (one client per browser: a grant lives in that browser's session cookie).
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx import Response
from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.cases import accounts
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.errors import Refused
from lifecycle.mail import bulk, emails
from lifecycle.schedule import jobs
from lifecycle.store.models import (
    Agreement,
    AuditEvent,
    Feedback,
    Meeting,
    OutboxMessage,
    Relation,
    Subscriber,
)
from lifecycle.web.app import create
from lifecycle.web.links import ACTION_TRIGGERS
from lifecycle.workflows.engine import load_case
from lifecycle.workflows.spec import LINK_ACTIONS
from tests.conftest import COORDINATOR, bring, list_mentor, write_lock_held

MENTOR = "mari.mets@example.org"
MENTEE = "jaan.jogi@example.org"
OTHER_MENTEE = "kati.kask@example.org"
QUESTION = "Kuidas kujundada oma karjääri järgmised viis aastat?"
PASSWORD = "koordinaatori-parool-2026"


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def mentor(app: App, clock: ManualClock) -> str:
    """MENTOR listed in the directory through the real application steps; their case ref."""
    return list_mentor(app, clock, MENTOR, "Mari Mets")


def request(app: App, mentee: str = MENTEE) -> str:
    return scenarios.submit_request(app, scenarios.mentee(mentee, f"Juhendatav {mentee}", MENTOR))


def relation_in(app: App, clock: ManualClock, state: str) -> str:
    ref = request(app)
    scenarios.bring_relation(app, clock, ref, state, mentor=MENTOR, mentee_email=MENTEE)
    return ref


def browser(app: App) -> TestClient:
    """A browser of its own: its own cookies, so its own session and grants."""
    return TestClient(create(app))


def path_of(app: App, link: str) -> str:
    assert link.startswith(app.settings.base_url), link
    return link[len(app.settings.base_url) :]


def link_in(app: App, *, template: str, to: str, ref: str | None = None) -> str:
    """The path of the link in the newest email of this template to this address."""
    with app.unit() as tx:
        query = select(OutboxMessage).where(
            OutboxMessage.template == template, OutboxMessage.to_email == to
        )
        if ref is not None:
            query = query.where(OutboxMessage.case_id == load_case(tx, ref)[0].id)
        message = tx.session.scalars(query.order_by(OutboxMessage.id.desc())).first()
        assert message is not None, f"no {template} email to {to}"
        context = emails.context_for(tx.session, tx.settings, message)
    return path_of(app, context["unsubscribe_link"] if message.bulk else context["link"])


def follow(client: TestClient, path: str) -> str:
    """Open a case-action link: it redirects this browser to its page."""
    response = client.get(path, follow_redirects=False)
    assert response.status_code == 303, response.text
    return str(response.headers["location"])


def hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no hidden {name} in the page"
    return found.group(1)


def submit(client: TestClient, page: str, trigger: str, **fields: Any) -> Response:
    """Send one step's form from the page as a browser would: CSRF token and version included."""
    html = client.get(page).text
    data = {"csrf": hidden(html, "csrf"), "trigger": trigger, "version": hidden(html, "version")}
    data.update({f"f_{name}": str(value) for name, value in fields.items()})
    return client.post(page, data=data, follow_redirects=False)


def state_of(app: App, ref: str) -> str:
    with app.unit() as tx:
        return load_case(tx, ref)[0].state


def relation_of(app: App, ref: str) -> tuple[Relation, list[Agreement], list[Meeting]]:
    with app.unit() as tx:
        _, relation = load_case(tx, ref)
        assert isinstance(relation, Relation)
        return relation, list(relation.agreements), list(relation.meetings)


def open_page(app: App, to: str, template: str, ref: str) -> tuple[TestClient, str]:
    """A fresh browser that followed the link in this email, and the page it landed on."""
    client = browser(app)
    return client, follow(client, link_in(app, template=template, to=to, ref=ref))


# -- answering a request ---------------------------------------------------------------------


def test_every_link_action_has_a_page_with_its_steps() -> None:
    assert set(ACTION_TRIGGERS) == set(LINK_ACTIONS)


def test_mentor_accepts_the_request_from_the_link_and_sees_the_concrete_question(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    client, page = open_page(app, MENTOR, "request_received", ref)
    assert page == f"/act/{ref}/respond"
    html = client.get(page).text
    assert QUESTION in html
    assert 'value="accept"' in html and 'value="decline"' in html

    response = submit(client, page, "accept")

    assert response.status_code == 303
    assert response.headers["location"] == f"/act/{ref}/respond?done=accept"
    assert state_of(app, ref) == "first_meeting"
    after = client.get(response.headers["location"]).text
    assert 'data-done="accept"' in after
    assert 'data-state="first_meeting"' in after
    assert 'data-steps="none"' in after  # nothing more to answer through this link


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_link_and_its_page_open_while_another_process_holds_the_write_lock(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    link = link_in(app, template="request_received", to=MENTOR, ref=ref)
    client = browser(app)
    with write_lock_held(app):
        page = follow(client, link)
        html = client.get(page).text
    assert page == f"/act/{ref}/respond"
    assert QUESTION in html and 'value="accept"' in html


def test_mentor_declines_with_a_reason_that_goes_on_record(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    client, page = open_page(app, MENTOR, "request_received", ref)

    response = submit(client, page, "decline", reason="Mul pole praegu aega.")

    assert response.status_code == 303
    assert state_of(app, ref) == "declined"
    with app.unit() as tx:
        event = tx.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc())).first()
        assert event is not None
        assert (event.trigger, event.party_text) == ("decline", "Mul pole praegu aega.")


def test_accepted_mentor_schedules_the_first_meeting_and_both_go_on_from_their_links(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    scenarios.step(app, ref, "accept", MENTOR)
    client, page = open_page(app, MENTOR, "request_accepted", ref)
    assert page == f"/act/{ref}/schedule_meeting"
    starts = (clock.now + timedelta(days=3)).astimezone(app.settings.time_zone)

    response = submit(
        client, page, "schedule_meeting", starts_at=starts.strftime("%Y-%m-%dT%H:%M"), place="Zoom"
    )

    assert response.status_code == 303
    _, _, meetings = relation_of(app, ref)
    assert [(m.starts_at, m.place) for m in meetings] == [(starts.replace(second=0), "Zoom")]
    clock.now = meetings[0].starts_at + timedelta(hours=3)
    jobs.fire_due_timers(app)  # the "do you go on?" question goes out
    for party in (MENTOR, MENTEE):
        party_client, go_on = open_page(app, party, "go_on_question", ref)
        assert submit(party_client, go_on, "proceed").status_code == 303
    assert state_of(app, ref) == "agreement"


def test_a_refused_step_is_explained_next_to_the_form_keeping_what_was_typed(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    scenarios.step(app, ref, "accept", MENTOR)
    client, page = open_page(app, MENTEE, "request_accepted", ref)

    response = submit(client, page, "schedule_meeting", starts_at="next tuesday", place="Kohvik")

    assert response.status_code == 422
    assert "2026-03-01T14:00" in response.text  # the error says how to write it
    assert 'aria-invalid="true"' in response.text
    assert ">Kohvik<" not in response.text and 'value="Kohvik"' in response.text
    assert relation_of(app, ref)[2] == []


def test_a_stale_page_gets_a_conflict_showing_the_new_state(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    client, page = open_page(app, MENTOR, "request_received", ref)
    html = client.get(page).text
    scenarios.step(app, ref, "cancel", MENTEE, reason="Leidsin teise mentori.")

    response = client.post(
        page,
        data={
            "csrf": hidden(html, "csrf"),
            "trigger": "accept",
            "version": hidden(html, "version"),
        },
    )

    assert response.status_code == 409
    assert 'data-problem="conflict"' in response.text
    assert 'data-state="closed"' in response.text
    assert state_of(app, ref) == "closed"


# -- links that no longer work ---------------------------------------------------------------


def test_opening_a_link_spends_nothing_and_the_first_step_taken_with_it_does(
    app: App, clock: ManualClock, mentor: str
) -> None:
    """A mail scanner opens every link before its reader does: only a step spends a link."""
    ref = request(app)
    link = link_in(app, template="request_received", to=MENTOR, ref=ref)
    scanner = browser(app)
    page = follow(scanner, link)
    seen = scanner.get(page)
    assert page == f"/act/{ref}/respond" and seen.status_code == 200
    reader = browser(app)
    assert follow(reader, link) == page

    assert submit(reader, page, "accept").status_code == 303
    assert state_of(app, ref) == "first_meeting"
    assert follow(reader, link) == page  # the reader may come back to the page
    form = {"csrf": hidden(seen.text, "csrf"), "version": hidden(seen.text, "version")}
    late = scanner.post(page, data={**form, "trigger": "decline", "f_reason": "x"})
    assert late.status_code == 410 and 'data-rule="link_used"' in late.text
    assert f'action="{link}/fresh"' in late.text
    assert state_of(app, ref) == "first_meeting"


def version_of(app: App, ref: str) -> int:
    with app.read() as tx:
        return load_case(tx, ref)[0].version


def test_a_step_the_page_no_longer_offers_is_refused_with_its_reason_shown(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    client = browser(app)
    page = follow(client, link_in(app, template="request_received", to=MENTOR, ref=ref))
    stale = client.get(page).text  # the form as it was, before the answer
    assert submit(client, page, "accept").status_code == 303

    again = client.post(
        page,
        data={
            "csrf": hidden(stale, "csrf"),
            "version": str(version_of(app, ref)),  # not a conflict: the current version
            "trigger": "decline",
            "f_reason": "Siiski mitte",
        },
    )

    assert again.status_code == 422
    assert 'data-rule="state"' in again.text and "ei saa selles seisus teha" in again.text
    assert state_of(app, ref) == "first_meeting"


def test_a_link_used_elsewhere_says_used_and_the_fresh_link_it_sends_works(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    link = link_in(app, template="request_received", to=MENTOR, ref=ref)
    first = browser(app)
    assert submit(first, follow(first, link), "accept").status_code == 303
    other = browser(app)

    replay = other.get(link)

    assert replay.status_code == 410
    assert 'data-rule="link_used"' in replay.text
    assert f'action="{link}/fresh"' in replay.text
    assert "/act/" not in replay.text  # this browser never opened the page
    sent = other.post(f"{link}/fresh", data={"csrf": hidden(replay.text, "csrf")})
    assert sent.status_code == 200 and 'data-outcome="fresh_sent"' in sent.text
    fresh = link_in(app, template="fresh_link", to=MENTOR, ref=ref)
    assert fresh != link
    with app.unit() as tx:
        message = tx.session.scalars(
            select(OutboxMessage).where(OutboxMessage.template == "fresh_link")
        ).one()
        context = emails.context_for(tx.session, tx.settings, message)
        rendered = emails.render_all(
            tx.settings.templates_dir, "fresh_link", "et", context, base_url=tx.settings.base_url
        )
    assert fresh in rendered.text and ref in rendered.subject
    assert follow(other, fresh) == f"/act/{ref}/respond"
    assert other.get(f"/act/{ref}/respond").status_code == 200
    again = other.post(f"{link}/fresh", data={"csrf": hidden(replay.text, "csrf")})
    assert 'data-outcome="fresh_already"' in again.text  # one fresh link per old link


def test_an_expired_link_says_expired_and_offers_a_fresh_one(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    link = link_in(app, template="request_received", to=MENTOR, ref=ref)
    clock.now += app.settings.link_valid + timedelta(minutes=1)
    client = browser(app)

    response = client.get(link)

    assert response.status_code == 410
    assert 'data-rule="link_expired"' in response.text
    assert f'action="{link}/fresh"' in response.text
    assert client.get(f"/act/{ref}/respond").status_code == 403  # nothing was granted


def test_a_tampered_or_posted_case_link_is_refused_and_stays_unspent(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    link = link_in(app, template="request_received", to=MENTOR, ref=ref)
    token_id, _, signature = link.removeprefix("/l/").partition(".")
    flipped = "0" if signature[-1] != "0" else "1"
    client = browser(app)

    for bad in (
        f"/l/{token_id}.{signature[:-1]}{flipped}",  # another signature
        f"/l/{token_id}.{signature[:-1]}ü",  # not even hexadecimal
        f"/l/{token_id[:-1]}x.{signature}",  # another token
        f"/l/{token_id}",  # no signature
        f"/l/{token_id}%00.{signature}",  # a NUL byte, which PostgreSQL would not take
    ):
        response = client.get(bad)
        assert response.status_code == 404, bad
        assert 'data-rule="link_invalid"' in response.text
        assert "/fresh" not in response.text
    posted = client.post(link, data={"List-Unsubscribe": "One-Click"})
    assert posted.status_code == 405  # only an unsubscribe link may be posted to
    assert follow(client, link) == f"/act/{ref}/respond"  # the real link was not spent


# -- what a link grants ----------------------------------------------------------------------


def test_a_link_for_one_case_cannot_act_on_another_case(
    app: App, clock: ManualClock, mentor: str
) -> None:
    first = request(app)
    second = request(app, OTHER_MENTEE)
    client, page = open_page(app, MENTOR, "request_received", first)
    html = client.get(page).text

    shown = client.get(f"/act/{second}/respond")
    posted = client.post(
        f"/act/{second}/respond",
        data={"csrf": hidden(html, "csrf"), "trigger": "accept", "version": "1"},
    )

    assert shown.status_code == 403 and 'data-rule="not_granted"' in shown.text
    assert "Juhendatav" not in shown.text  # nothing of the other case is shown
    assert posted.status_code == 403
    assert state_of(app, second) == "requested"


def test_a_link_grants_only_its_own_steps(app: App, clock: ManualClock, mentor: str) -> None:
    ref = relation_in(app, clock, "first_meeting")
    client, page = open_page(app, MENTEE, "request_accepted", ref)
    html = client.get(page).text

    cancel = client.post(
        page,
        data={
            "csrf": hidden(html, "csrf"),
            "trigger": "cancel",
            "version": hidden(html, "version"),
        },
    )
    other_action = client.get(f"/act/{ref}/agreement")

    assert cancel.status_code == 403
    assert other_action.status_code == 403
    assert state_of(app, ref) == "first_meeting"


def test_a_post_without_the_csrf_token_is_refused(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    client, page = open_page(app, MENTOR, "request_received", ref)
    version = hidden(client.get(page).text, "version")

    without = client.post(page, data={"trigger": "accept", "version": version})
    wrong = client.post(page, data={"csrf": "guess", "trigger": "accept", "version": version})

    assert without.status_code == 403 and wrong.status_code == 403
    assert state_of(app, ref) == "requested"


def test_a_coordinators_console_session_grants_no_link_actions(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = request(app)
    with app.unit() as tx:
        accounts.add_user(
            tx, name="Liis Lepik", email=COORDINATOR, role="coordinator", password=PASSWORD
        )
    client = browser(app)
    login = client.get("/console/login")
    logged_in = client.post(
        "/console/login",
        data={"csrf": hidden(login.text, "csrf"), "email": COORDINATOR, "password": PASSWORD},
        follow_redirects=False,
    )
    assert logged_in.status_code == 303
    console = client.get(f"/console/cases/{ref}")
    assert console.status_code == 200

    shown = client.get(f"/act/{ref}/respond")
    posted = client.post(
        f"/act/{ref}/respond",
        data={"csrf": hidden(console.text, "csrf"), "trigger": "accept", "version": "1"},
    )

    assert shown.status_code == 403 and QUESTION not in shown.text
    assert posted.status_code == 403
    assert state_of(app, ref) == "requested"


# -- the agreement ---------------------------------------------------------------------------


def test_both_parties_draft_and_sign_the_agreement_from_their_links(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    mentee_client, mentee_page = open_page(app, MENTEE, "agreement_invitation", ref)
    mentor_client, mentor_page = open_page(app, MENTOR, "agreement_invitation", ref)
    assert mentee_page == mentor_page == f"/act/{ref}/agreement"
    terms = {
        "goal": "Selge karjääriplaan",
        "starts_on": "2026-10-01",
        "ends_on": "2027-03-31",
        "meeting_rhythm": "kord kuus",
        "fee": "tasuta",
        "confidentiality": "true",
        "question": QUESTION,
    }

    assert submit(mentee_client, mentee_page, "draft_agreement", **terms).status_code == 303
    shown = mentor_client.get(mentor_page).text
    assert "Selge karjääriplaan" in shown and 'value="sign"' in shown
    assert submit(mentor_client, mentor_page, "sign").status_code == 303
    assert state_of(app, ref) == "agreement"
    assert 'value="sign"' not in mentor_client.get(mentor_page).text  # signed already
    assert submit(mentee_client, mentee_page, "sign").status_code == 303

    assert state_of(app, ref) == "active"
    _, agreements, _ = relation_of(app, ref)
    assert [(a.version, a.goal, a.ends_on) for a in agreements] == [
        (1, "Selge karjääriplaan", date(2027, 3, 31))
    ]


def test_an_agreement_refused_by_a_rule_keeps_what_was_typed(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "agreement")
    client, page = open_page(app, MENTEE, "agreement_invitation", ref)

    response = submit(
        client,
        page,
        "draft_agreement",
        goal="Uus töökoht",
        starts_on="2026-10-01",
        ends_on="2026-09-01",
        meeting_rhythm="kord kuus",
        confidentiality="true",
    )

    assert response.status_code == 422
    assert 'data-rule="time_frame"' in response.text
    assert ">Uus töökoht</textarea>" in response.text
    assert 'value="2026-09-01"' in response.text
    assert relation_of(app, ref)[1] == []


def test_the_reframed_agreement_shows_what_changed_and_is_signed_again(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "reframed")
    client, page = open_page(app, MENTOR, "agreement_reframed", ref)

    html = client.get(page).text

    history = html[html.index('id="history"') :]
    assert 'data-version="2"' in history and 'data-version="1"' in history
    assert f"<del>{QUESTION}</del>" in history
    assert "<ins>Kuidas juhtida meeskonna muudatusi?</ins>" in history
    assert "Selge karjääriplaan" in html
    assert submit(client, page, "sign").status_code == 303
    mentee_client, mentee_page = open_page(app, MENTEE, "agreement_reframed", ref)
    assert submit(mentee_client, mentee_page, "sign").status_code == 303
    assert state_of(app, ref) == "active"


# -- closing and feedback --------------------------------------------------------------------


def test_each_party_gives_feedback_once_from_the_link(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = relation_in(app, clock, "closed")
    client, page = open_page(app, MENTEE, "feedback_request", ref)

    refused = submit(client, page, "give_feedback", rating=9, comment="Väga hea")
    given = submit(client, page, "give_feedback", rating=5, comment="Väga hea")

    assert refused.status_code == 422 and 'id="give_feedback-rating-error"' in refused.text
    assert "Väga hea</textarea>" in refused.text
    assert given.status_code == 303
    with app.unit() as tx:
        rows = tx.session.scalars(select(Feedback)).all()
        assert [(f.rating, f.comment) for f in rows] == [(5, "Väga hea")]
    assert 'value="give_feedback"' not in client.get(page).text


# -- applications ----------------------------------------------------------------------------


def test_applicant_answers_the_coordinators_question_from_the_link(
    app: App, clock: ManualClock
) -> None:
    email = "tiit.tamm@example.org"
    ref = scenarios.submit_application(app, scenarios.applicant(email, "Tiit"), actor=COORDINATOR)
    bring(app, clock, ref, "awaiting_info", email)
    client, page = open_page(app, email, "info_requested", ref)
    assert "Palun saatke diplomi koopia." in client.get(page).text

    response = submit(client, page, "provide_info", message="Saatsin koopia e-postiga.")

    assert response.status_code == 303
    assert state_of(app, ref) == "eligibility"


def test_listed_mentor_pauses_and_resumes_from_the_welcome_link(
    app: App, clock: ManualClock, mentor: str
) -> None:
    ref = mentor
    client, page = open_page(app, MENTOR, "listed_welcome", ref)
    assert page == f"/act/{ref}/availability"

    assert submit(client, page, "pause", reason="Puhkus").status_code == 303
    assert state_of(app, ref) == "paused"
    html = client.get(page).text
    assert 'value="resume"' in html and 'value="pause"' not in html
    assert submit(client, page, "resume").status_code == 303
    assert state_of(app, ref) == "listed"


# -- subscriptions ---------------------------------------------------------------------------


def subscriber(app: App, email: str) -> Subscriber:
    with app.unit() as tx:
        found = tx.session.scalar(select(Subscriber).where(Subscriber.email == email))
        assert found is not None
        return found


def test_subscriber_confirms_then_unsubscribes_with_one_click_post(
    app: App, clock: ManualClock
) -> None:
    email = "huviline@example.org"
    with app.unit() as tx:
        bulk.subscribe(tx, email=email, language="et")
    confirm = link_in(app, template="subscription_confirm", to=email)

    client = browser(app)
    opened = client.get(confirm)  # a mail scanner opening it would confirm nothing
    assert subscriber(app, email).confirmed_at is None
    assert f'action="{confirm}"' in opened.text
    confirmed = client.post(confirm)

    assert confirmed.status_code == 200 and 'data-outcome="confirmed"' in confirmed.text
    assert subscriber(app, email).confirmed_at is not None
    with app.unit() as tx:
        announcement = bulk.draft_announcement(
            tx,
            audience="subscribers",
            author_email=COORDINATOR,
            texts={"et": ("Uus voor", "Kandideeri!"), "en": ("New round", "Apply!")},
        )
        assert bulk.send_announcement(tx, announcement_id=announcement.id) == 1
    unsubscribe = link_in(app, template="announcement", to=email)

    shown = browser(app).get(unsubscribe)  # a mail scanner's GET changes nothing
    assert shown.status_code == 200 and f'action="{unsubscribe}"' in shown.text
    assert subscriber(app, email).unsubscribed_at is None
    one_click = TestClient(create(app)).post(unsubscribe, data={"List-Unsubscribe": "One-Click"})

    assert one_click.status_code == 200 and 'data-outcome="unsubscribed"' in one_click.text
    assert subscriber(app, email).unsubscribed_at is not None
    again = browser(app).post(unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert 'data-outcome="unsubscribed_already"' in again.text


def test_an_expired_confirmation_link_sends_a_fresh_one_that_confirms(
    app: App, clock: ManualClock
) -> None:
    email = "hiline@example.org"
    with app.unit() as tx:
        bulk.subscribe(tx, email=email, language="en")
    old = link_in(app, template="subscription_confirm", to=email)
    clock.now += app.settings.link_valid + timedelta(days=1)
    client = browser(app)

    expired = client.get(old)
    sent = client.post(f"{old}/fresh", data={"csrf": hidden(expired.text, "csrf")})

    assert expired.status_code == 410 and 'data-rule="link_expired"' in expired.text
    assert 'data-outcome="fresh_sent"' in sent.text
    assert subscriber(app, email).confirmed_at is None
    confirmed = client.post(link_in(app, template="fresh_link", to=email))
    assert 'data-outcome="confirmed"' in confirmed.text
    assert subscriber(app, email).confirmed_at is not None


def test_redeeming_a_link_with_a_non_ascii_signature_is_refused_as_invalid(
    app: App, clock: ManualClock
) -> None:
    with app.unit() as tx:
        bulk.subscribe(tx, email="uudishimulik@example.org", language="et")
    link = link_in(app, template="subscription_confirm", to="uudishimulik@example.org")
    token_id = link.removeprefix("/l/").partition(".")[0]

    with pytest.raises(Refused) as refused, app.unit() as tx:
        bulk.confirm_subscription(tx, link=f"{token_id}.ü")

    assert refused.value.rule == "link_invalid"
