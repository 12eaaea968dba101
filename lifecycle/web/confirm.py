"""The page behind a public submission's confirmation link (lifecycle.cases.pending).

A request or an application sent from a public form or the public API waits until the owner of
its address confirms it here. Opening the link (/l/<link>, which sends the browser on to this
page) shows what waits and changes nothing, since mail scanners open links; the button submits
it. What the service refuses then — an open request already waiting, an application already
under way — is shown here, to the owner only. A used link says so; an expired one offers to
submit again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle.cases import pending
from lifecycle.cases.pending import Waiting
from lifecycle.errors import InvalidInput, Refused
from lifecycle.web import auth
from lifecycle.web.links import private, problem_page
from lifecycle.web.pages import core, field_errors, page, redirect, refusal_text
from lifecycle.web.public import mentor_entry

router = APIRouter(include_in_schema=False)

# Where the done page's words are, per kind.
SECTIONS = {"request": "request", "application": "apply"}
# What a link no longer working is called; the page for it tells which.
LINK_RULES = ("link_invalid", "link_used", "link_expired")


def _mentor_id(waiting: Waiting) -> int | None:
    value = str(waiting.data.get("mentor_id", ""))
    return int(value) if value.isascii() and value.isdigit() and 0 < len(value) <= 9 else None


def _page(
    request: Request, text: str, waiting: Waiting, status_code: int = 200, **more: Any
) -> Response:
    mentor_id = _mentor_id(waiting)
    entry = mentor_entry(request, mentor_id) if waiting.kind == "request" else None
    if waiting.kind == "application":
        again = "/apply"
    else:
        again = f"/request?mentor={mentor_id}" if entry is not None else "/"
    return private(
        page(
            request,
            "confirm.html",
            status_code=status_code,
            text=text,
            kind=waiting.kind,
            state=waiting.state,
            data=waiting.data,
            entry=entry,
            again=again,
            **more,
        )
    )


@router.get("/l/{text}/confirm", response_class=HTMLResponse)
def confirmation(request: Request, text: str) -> Response:
    """What waits for confirmation, with the button; nothing is spent by looking."""
    with core(request).read() as tx:
        waiting = pending.look_up(tx, link=text)
    if waiting is None:
        return problem_page(request, text, "link_invalid")
    request.session.setdefault("lang", waiting.language)
    return _page(request, text, waiting, 410 if waiting.state == "expired" else 200)


@router.post("/l/{text}/confirm", response_class=HTMLResponse)
def confirm(request: Request, text: str, csrf: Annotated[str, Form()] = "") -> Response:
    """The owner's button: the submission goes through the service now, or the page says why
    it cannot (the link stays unspent then)."""
    auth.check_csrf(request, csrf)
    waiting: Waiting | None = None
    try:
        with core(request).unit() as tx:
            waiting = pending.look_up(tx, link=text)
            if waiting is None:
                raise Refused("this link is not valid", rule="link_invalid")
            ref = pending.confirm(tx, link=text).ref
    except Refused as error:
        if error.rule == "link_invalid":
            return problem_page(request, text, error.rule)
        if error.rule in LINK_RULES:  # used meanwhile, or expired: the page says which
            return private(redirect(f"/l/{text}/confirm"))
        assert waiting is not None
        return _page(request, text, waiting, 409, refusal=refusal_text(request, error))
    except InvalidInput as error:  # e.g. the mentor chosen has left the directory meanwhile
        assert waiting is not None
        return _page(
            request, text, waiting, 422, refusal=" ".join(field_errors(request, error).values())
        )
    section = SECTIONS[waiting.kind]
    return private(
        page(
            request,
            "done.html",
            heading=f"{section}.sent",
            text=f"{section}.sent_text",
            ref=ref,
            ref_label=f"{section}.ref",
        )
    )
