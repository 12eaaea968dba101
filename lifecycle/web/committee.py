"""The committee view: a member's interviews, the evidence for each, and their vote."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from lifecycle.cases import queries, services
from lifecycle.errors import InvalidInput, NotFound, Refused
from lifecycle.store.models import Application, CommitteeVote
from lifecycle.web import auth
from lifecycle.web.console import staff
from lifecycle.web.pages import core, page, redirect

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/committee", response_class=HTMLResponse)
def committee(request: Request) -> HTMLResponse:
    member = staff(request, "committee", "coordinator")
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
        interviews=interviews,
        zone=core(request).settings.time_zone,
        flash=request.session.pop("flash", ""),
    )


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
