"""The console's running of the service: intake rounds, the mail outbox and the subscribers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from lifecycle.cases import queries
from lifecycle.errors import InvalidInput, NotFound, Refused
from lifecycle.schedule import intake
from lifecycle.store.models import OutboxMessage, Subscriber
from lifecycle.web import auth
from lifecycle.web.console import staff
from lifecycle.web.pages import core, page, redirect

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/rounds", response_class=HTMLResponse)
def rounds_page(request: Request) -> HTMLResponse:
    staff(request, "coordinator")
    with core(request).unit() as tx:
        intake.ensure_rounds(tx)
        rounds = intake.list_rounds(tx)
    return page(request, "rounds.html", rounds=rounds, problem=request.session.pop("flash", ""))


@router.post("/rounds")
async def rounds_change(request: Request) -> Response:
    """Create, move or cancel a round; a refusal comes back as a message on the page."""
    staff(request, "coordinator")
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    action = str(form.get("action", ""))
    opens, closes = str(form.get("opens", "")), str(form.get("closes", ""))
    try:
        with core(request).unit() as tx:
            if action == "create":
                intake.create_round(tx, name=str(form.get("name", "")), opens=opens, closes=closes)
            elif action in ("move", "cancel"):
                raw = str(form.get("round", ""))
                if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):
                    raise InvalidInput("round", "choose a round from the list")
                round_id = int(raw)
                if action == "move":
                    intake.move_round(tx, round_id=round_id, opens=opens, closes=closes)
                else:
                    intake.cancel_round(tx, round_id=round_id)
            else:
                raise InvalidInput("action", "must be create, move or cancel")
    except (InvalidInput, Refused, NotFound) as error:
        request.session["flash"] = str(error)
    return redirect("/console/rounds")


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(request: Request, status: str = "") -> HTMLResponse:
    staff(request, "coordinator")
    with core(request).read() as tx:
        messages = queries.list_outbox(tx, status=status or None)
    return page(request, "outbox.html", messages=messages, status=status)


@router.post("/outbox/{message_id}/retry")
def retry(request: Request, message_id: int, csrf: Annotated[str, Form()] = "") -> Response:
    staff(request, "coordinator")
    auth.check_csrf(request, csrf)
    with core(request).unit() as tx:
        # An id beyond what an INTEGER column holds names no message (and would overflow).
        message = tx.session.get(OutboxMessage, message_id) if 0 < message_id < 2**31 else None
        if message is None:
            raise HTTPException(status_code=404, detail="no such message")
        if message.status == "failed":
            message.status, message.next_attempt_at, message.attempts = "pending", tx.now, 0
    return redirect("/console/outbox")


@router.get("/subscribers", response_class=HTMLResponse)
def subscribers_page(request: Request) -> HTMLResponse:
    staff(request, "coordinator")
    with core(request).read() as tx:
        subscribers = tx.session.scalars(select(Subscriber).order_by(Subscriber.email)).all()
    return page(request, "subscribers.html", subscribers=subscribers)
