"""Trust at the public edge: what a stranger can make the service send, serve or store.

Each test is one promise of docs/security.md, tried from outside as an attacker would.
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta

from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.demo import scenarios
from lifecycle.demo.scenarios import ManualClock
from lifecycle.mail import mailer
from lifecycle.store.models import OutboxMessage
from tests.conftest import list_mentor

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
