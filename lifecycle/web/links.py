"""Pages behind email links: following one, subscription links, and a fresh link for a used one.

Following a link grants this browser one action on one case (auth.grant), taken on its page in
lifecycle.web.link_steps, which checks the grant against the link's token on every request.
Opening a link spends nothing, since mail scanners open links before their readers do; the
first step taken spends it, and the browser that took it may go on for a while. Subscription
links confirm with a button, or unsubscribe in one click (RFC 8058). A used or expired link
says so and can send its owner a fresh one by email.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle.cases.pending import KIND_OF_ACTION
from lifecycle.errors import Refused
from lifecycle.mail import bulk
from lifecycle.store.models import ActionToken, Case, Person, Subscriber
from lifecycle.web import auth, limits
from lifecycle.web.pages import core, page, redirect
from lifecycle.workflows import links, outbox
from lifecycle.workflows.engine import Tx

router = APIRouter(include_in_schema=False)

# What each link lets its reader do: the steps its page offers, and nothing else.
ACTION_TRIGGERS: dict[str, tuple[str, ...]] = {
    "provide_info": ("provide_info",),
    "availability": ("pause", "resume", "retire"),
    "respond": ("accept", "decline"),
    "schedule_meeting": ("schedule_meeting", "move_meeting", "cancel_meeting"),
    "go_on": ("proceed", "discontinue"),
    "agreement": ("draft_agreement", "sign", "reframe"),
    "log_meeting": ("log_meeting", "reframe", "close"),
    "close": ("close",),
    "feedback": ("give_feedback",),
}
# A link's token must not leak through the Referer header, a shared cache or a search engine.
PRIVATE = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def private(response: Response) -> Response:
    response.headers.update(PRIVATE)
    return response


def _case_ref(tx: Tx, token: ActionToken) -> str | None:
    case = tx.session.get(Case, token.case_id) if token.case_id is not None else None
    return case.ref if case is not None else None


# -- following a link ---------------------------------------------------------------------------


@router.get("/l/{text}", response_class=HTMLResponse)
def follow(request: Request, text: str) -> Response:
    """Open a link: a case action grants this browser its page; a subscription link shows its
    button. Nothing is spent here (see the module's docstring)."""
    try:
        with core(request).read() as tx:
            token = links.find(tx.session, tx.settings, text)
            if token is None:
                raise Refused("this link is not valid", rule="link_invalid")
            action, token_id = token.action, token.id
            if action in KIND_OF_ACTION:  # a public submission's confirmation: its own page
                return private(redirect(f"/l/{text}/confirm"))
            if token.used_at is not None and action in SUBSCRIPTION_DONE:
                return _done(request, SUBSCRIPTION_DONE[action])
            spent_here = auth.spent_here(request, token_id)
            links.check_open(token, now=tx.now, spent_here=spent_here, grace=tx.settings.link_grace)
            if action in SUBSCRIPTION_DONE:
                return private(page(request, f"link_{action}.html", text=text))
            ref = _case_ref(tx, token)
            person = tx.session.get(Person, token.person_id) if token.person_id else None
            if ref is None or person is None or person.erased_at or action not in ACTION_TRIGGERS:
                raise Refused("this link is not valid", rule="link_invalid")
            person_id, person_language = person.id, person.language
    except Refused as error:
        return problem_page(request, text, error.rule)
    auth.grant(request, person_id=person_id, case_ref=ref, action=action, token_id=token_id)
    request.session.setdefault("lang", person_language)
    return private(redirect(f"/act/{ref}/{action}"))


# What a used subscription link says when it is opened again.
SUBSCRIPTION_DONE = {
    "unsubscribe": "unsubscribed_already",
    "confirm_subscription": "confirmed_already",
}


@router.post("/l/{text}", response_class=HTMLResponse)
def subscription_button(request: Request, text: str) -> Response:
    """Confirm or unsubscribe: the page's button, or the mail client's one-click unsubscribe
    (RFC 8058: List-Unsubscribe=One-Click, with no cookie or CSRF token; the link is the key).

    Only a subscription link may be posted to; every other link is opened, not posted.
    """
    with core(request).read() as tx:
        token = links.find(tx.session, tx.settings, text)
        action, used = (token.action, token.used_at) if token else (None, None)
    if action is None:
        return problem_page(request, text, "link_invalid")
    if action not in SUBSCRIPTION_DONE:
        return private(page(request, "link_problem.html", status_code=405, rule="post_refused"))
    if used is not None:
        return _done(request, SUBSCRIPTION_DONE[action])
    try:
        with core(request).unit() as tx:
            if action == "unsubscribe":
                bulk.unsubscribe(tx, link=text)
            else:
                bulk.confirm_subscription(tx, link=text)
    except Refused as error:
        return problem_page(request, text, error.rule)
    return _done(request, "unsubscribed" if action == "unsubscribe" else "confirmed")


@router.post("/l/{text}/fresh", response_class=HTMLResponse)
def send_fresh_link(request: Request, text: str, csrf: Annotated[str, Form()] = "") -> Response:
    """Email the owner of a used or expired link a new one (once per old link, and within the
    limits on mail sent at a stranger's asking). A public submission's expired confirmation is
    not renewed: its page offers to submit again."""
    auth.check_csrf(request, csrf)
    try:
        with core(request).unit() as tx:
            token = links.find(tx.session, tx.settings, text)
            if token is None:
                outcome = "invalid"
            elif token.action in KIND_OF_ACTION or (
                token.used_at is None and token.expires_at > tx.now
            ):
                outcome = "still_valid"
            elif outbox.exists(tx.session, f"fresh_link:{token.id}"):
                outcome = "fresh_already"
            else:
                address = _queue_fresh_link(tx, token)
                limits.spend(tx.session, limits.keys(request, address), tx.now)
                outcome = "fresh_sent"
    except limits.Limited as limited:
        return private(limits.answer(request, limited))
    if outcome == "invalid":
        return problem_page(request, text, "link_invalid")
    if outcome == "still_valid":
        return private(redirect(f"/l/{text}"))
    return _done(request, outcome)


def _queue_fresh_link(tx: Tx, old: ActionToken) -> str:
    """A new token for the same reader, case and action, in an email to the reader; returns
    the reader's address."""
    key = f"fresh_link:{old.id}"
    if old.person_id is not None:
        person = tx.session.get(Person, old.person_id)
        assert person is not None
        outbox.add(
            tx.session,
            tx.settings,
            key=key,
            template="fresh_link",
            person=person,
            now=tx.now,
            case_id=old.case_id,
            link=old.action,
        )
        return person.email
    subscriber = tx.session.get(Subscriber, old.subscriber_id)
    assert subscriber is not None
    token = links.issue(
        tx.session,
        links.token_row(
            tx.settings,
            action=old.action,
            now=tx.now,
            subscriber_id=subscriber.id,
            valid_for=outbox.UNSUBSCRIBE_VALID if old.action == "unsubscribe" else None,
        ),
    )
    outbox.queue(
        tx.session,
        outbox.row(
            tx.settings,
            key=key,
            template="fresh_link",
            to=(subscriber.email, ""),
            language=subscriber.language,
            now=tx.now,
            token_id=token.id,
        ),
    )
    return subscriber.email


def problem_page(request: Request, text: str, rule: str) -> Response:
    """Why a link does not work; a used or expired one offers a fresh link by email."""
    offer_fresh = False
    if rule in ("link_used", "link_expired"):
        with core(request).read() as tx:
            offer_fresh = links.find(tx.session, tx.settings, text) is not None
    status = 404 if rule == "link_invalid" else 410
    return private(
        page(
            request,
            "link_problem.html",
            status_code=status,
            rule=rule,
            text=text,
            offer_fresh=offer_fresh,
        )
    )


def _done(request: Request, outcome: str) -> Response:
    return private(page(request, "link_done.html", outcome=outcome))
