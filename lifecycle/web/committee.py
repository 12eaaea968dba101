"""The committee view: a member's interviews, the evidence for each, and their vote."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from lifecycle.cases import queries, services
from lifecycle.errors import InvalidInput, NotFound, Refused
from lifecycle.store.models import APPLICATION, Application, CommitteeVote, Person
from lifecycle.web import auth
from lifecycle.web.console import staff
from lifecycle.web.pages import core, language, page, redirect, texts
from lifecycle.workflows.engine import Tx, parse_ref

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/committee", response_class=HTMLResponse)
def committee(request: Request) -> HTMLResponse:
    member = staff(request, "committee", "coordinator")
    return _interviews(request, member, flash=request.session.pop("flash", ""))


def _interviews(
    request: Request, member: Person, *, flash: str, status_code: int = 200
) -> HTMLResponse:
    """The member's interviews, with a message above them."""
    with core(request).read() as tx:
        seats = tx.session.scalars(
            select(CommitteeVote).where(CommitteeVote.member_id == member.id)
        ).all()
        interviews = []
        for seat in seats:
            application = tx.session.get(Application, seat.application_id)
            assert application is not None
            detail = queries.show_case(tx, application.case.ref, role="committee")
            interviews.append(
                {
                    "case": detail,
                    "seat": seat,
                    "application": application,
                    "evidence": application.evidence,
                }
            )
    return page(
        request,
        "committee.html",
        status_code=status_code,
        interviews=interviews,
        zone=core(request).settings.time_zone,
        flash=flash,
    )


def _on_panel(tx: Tx, *, ref: str, member_id: int) -> bool:
    """Whether the member has a seat on the interview of the application case `ref`."""
    try:
        workflow, case_id = parse_ref(ref)
    except NotFound:
        return False
    if workflow not in (APPLICATION, ""):
        return False
    seat = (
        select(CommitteeVote.id)
        .join(Application, CommitteeVote.application_id == Application.id)
        .where(Application.case_id == case_id, CommitteeVote.member_id == member_id)
    )
    return tx.session.scalar(seat) is not None


@router.post("/committee/{ref}/vote", response_class=HTMLResponse)
def vote(
    request: Request,
    ref: str,
    csrf: Annotated[str, Form()] = "",
    vote_: Annotated[str, Form(alias="vote")] = "",
    notes: Annotated[str, Form()] = "",
) -> Response:
    member = staff(request, "committee")
    auth.check_csrf(request, csrf)
    with core(request).read() as tx:
        seated = _on_panel(tx, ref=ref, member_id=member.id)
    if not seated:
        # One answer for a case on another panel, any other case and no case at all: the step's
        # refusal would tell a member the state and next steps of cases that are not theirs.
        not_yours = texts()["committee"]["not_yours"][language(request)]
        return _interviews(request, member, flash=not_yours, status_code=404)
    try:
        with core(request).unit() as tx:
            services.advance_case(
                tx,
                ref=ref,
                trigger="record_vote",
                actor_email=member.email,
                values={"vote": vote_, "notes": notes},
            )
    except (Refused, InvalidInput, NotFound) as error:
        request.session["flash"] = str(error)
    return redirect("/console/committee")
