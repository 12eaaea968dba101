"""The coordinator console and the committee view, behind a staff login.

Coordinators see states, dates, topics and the timeline, never the concrete question,
agreements, notes or reflections (SPEC §6): the pages read only lifecycle.queries.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from lifecycle.cases import queries, services
from lifecycle.errors import Conflict, InvalidInput, NotFound, Refused
from lifecycle.reports import disclosure
from lifecycle.reports import tables as reports
from lifecycle.reports.charts import report_charts
from lifecycle.schedule import intake
from lifecycle.store.models import (
    TOPIC_LABELS,
    Application,
    CommitteeVote,
    OutboxMessage,
    Person,
    Subscriber,
)
from lifecycle.web import auth, forms
from lifecycle.web.diagram import svg
from lifecycle.web.pages import core, language, page, redirect, texts

router = APIRouter(prefix="/console", include_in_schema=False)


def _staff(request: Request, *roles: str) -> Person:
    """The logged-in staff member with one of these roles; otherwise off to the login page."""
    person_id = auth.staff_id(request)
    if person_id is not None:
        with core(request).read() as tx:
            person = tx.session.get(Person, person_id)
        if person is not None and person.role in roles:
            return person
        if person is not None:
            raise HTTPException(status_code=403, detail="this page is not for your role")
    raise HTTPException(
        status_code=303, headers={"Location": f"/console/login?next={request.url.path}"}
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/console") -> HTMLResponse:
    return page(request, "login.html", values={"next": next}, errors={})


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console",
) -> Response:
    auth.check_csrf(request, csrf)
    keys = auth.throttle_keys(request, email)
    values = {"email": email, "next": next}
    try:
        person = auth.verify_login(core(request), keys, email, password)
    except auth.Throttled:
        return page(
            request,
            "login.html",
            status_code=429,
            values=values,
            errors={"form": "too many failed attempts; wait 15 minutes"},
        )
    if person is None:
        return page(
            request,
            "login.html",
            status_code=401,
            values=values,
            errors={"form": "wrong email or password"},
        )
    request.session.clear()  # a new session on login: nothing carried over
    request.session.update(staff_id=person.id, staff_name=person.name, staff_role=person.role)
    target = next if next.startswith("/") and not next.startswith("//") else "/console"
    if person.role == "committee" and target.startswith("/console") and "committee" not in target:
        target = "/console/committee"
    return redirect(target)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    auth.check_csrf(request, csrf)
    request.session.clear()
    return redirect("/")


@router.get("", response_class=HTMLResponse)
def work_queue(request: Request) -> HTMLResponse:
    _staff(request, "coordinator")
    with core(request).read() as tx:
        queue = queries.work_queue(tx, language=language(request))
        counts = queries.state_counts(tx)
    return page(request, "console.html", queue=queue, counts=counts)


@router.get("/cases", response_class=HTMLResponse)
def case_list(request: Request, workflow: str = "", state: str = "", q: str = "") -> Response:
    _staff(request, "coordinator")
    if q.strip().upper()[:2] in ("A-", "M-"):
        return redirect(f"/console/cases/{q.strip().upper()}")
    with core(request).read() as tx:
        cases = queries.list_cases(tx, workflow=workflow or None, state=state or None)
    if q.strip():
        needle = q.strip().casefold()
        cases = [
            c
            for c in cases
            if any(
                needle in str(c.get(k, "")).casefold() for k in ("applicant", "mentor", "mentee")
            )
        ]
    return page(request, "cases.html", cases=cases, workflow=workflow, state=state, q=q)


def _case_page(request: Request, ref: str, *, status_code: int = 200, **more: Any) -> Response:
    app = core(request)
    lang = language(request)
    try:
        with app.read() as tx:
            detail = queries.show_case(tx, ref, role="coordinator")
    except NotFound as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    workflow = app.workflows[detail["workflow"]]
    return page(
        request,
        "case.html",
        status_code=status_code,
        case=detail,
        diagram=svg(workflow, current=detail["state"], language=lang),
        **more,
    )


@router.get("/cases/{ref}", response_class=HTMLResponse)
def case_page(request: Request, ref: str) -> Response:
    _staff(request, "coordinator")
    return _case_page(request, ref)


@router.post("/cases/{ref}/advance", response_class=HTMLResponse)
async def advance(request: Request, ref: str) -> Response:
    coordinator = _staff(request, "coordinator")
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    trigger = str(form.get("trigger", ""))
    values = {
        key[len("f_") :]: str(value)
        for key, value in form.items()
        if key.startswith("f_") and str(value) != ""
    }
    if "committee" in values:
        values["committee"] = values["committee"].replace("\n", ",")
    try:
        version = int(str(form.get("version", "")))
    except ValueError:
        version = None
    try:
        with core(request).unit() as tx:
            services.advance_case(
                tx,
                ref=ref,
                trigger=trigger,
                actor_email=coordinator.email,
                values=values,
                override_reason=str(form.get("override", "")),
                expected_version=version,
            )
    except NotFound as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except Conflict as error:
        return _case_page(request, ref, status_code=409, problem=str(error), conflict=True)
    except Refused as error:
        return _case_page(
            request,
            ref,
            status_code=422,
            problem=error.reason,
            rule=error.rule,
            failed_step=trigger,
            typed=values,
        )
    except InvalidInput as error:
        return _case_page(
            request,
            ref,
            status_code=422,
            problem=str(error),
            rule=error.field,
            failed_step=trigger,
            typed=values,
        )
    return redirect(f"/console/cases/{ref}")


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(request: Request, status: str = "") -> HTMLResponse:
    _staff(request, "coordinator")
    with core(request).read() as tx:
        messages = queries.list_outbox(tx, status=status or None)
    return page(request, "outbox.html", messages=messages, status=status)


@router.post("/outbox/{message_id}/retry")
def retry(request: Request, message_id: int, csrf: Annotated[str, Form()] = "") -> Response:
    _staff(request, "coordinator")
    auth.check_csrf(request, csrf)
    with core(request).unit() as tx:
        # An id beyond what an INTEGER column holds names no message (and would overflow).
        message = tx.session.get(OutboxMessage, message_id) if 0 < message_id < 2**31 else None
        if message is None:
            raise HTTPException(status_code=404, detail="no such message")
        if message.status == "failed":
            message.status, message.next_attempt_at, message.attempts = "pending", tx.now, 0
    return redirect("/console/outbox")


@router.get("/committee", response_class=HTMLResponse)
def committee(request: Request) -> HTMLResponse:
    member = _staff(request, "committee", "coordinator")
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
    member = _staff(request, "committee")
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


@router.get("/rounds", response_class=HTMLResponse)
def rounds_page(request: Request) -> HTMLResponse:
    _staff(request, "coordinator")
    with core(request).unit() as tx:
        intake.ensure_rounds(tx)
        rounds = intake.list_rounds(tx)
    return page(request, "rounds.html", rounds=rounds, problem=request.session.pop("flash", ""))


@router.post("/rounds")
async def rounds_change(request: Request) -> Response:
    """Create, move or cancel a round; a refusal comes back as a message on the page."""
    _staff(request, "coordinator")
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


@router.get("/applications/new", response_class=HTMLResponse)
def application_form(request: Request) -> HTMLResponse:
    """A coordinator enters an application on someone's behalf (by phone or on paper)."""
    _staff(request, "coordinator")
    return page(
        request,
        "application_new.html",
        values=forms.blank_application(request),
        errors={},
        **forms.application_choices(),
    )


@router.post("/applications", response_class=HTMLResponse)
async def application_submit(request: Request) -> Response:
    coordinator = _staff(request, "coordinator")
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    values = forms.application_values(form)
    data, rows = forms.application_data(values)

    def again(status_code: int, errors: dict[str, str]) -> HTMLResponse:
        return page(
            request,
            "application_new.html",
            status_code=status_code,
            values=values,
            errors=errors,
            **forms.application_choices(),
        )

    try:
        with core(request).unit() as tx:
            ref = services.submit_application(tx, data=data, actor_email=coordinator.email).ref
    except InvalidInput as error:
        return again(422, {forms.application_field(error.field, rows): error.message})
    except Refused as error:
        return again(409, {"form": str(error)})
    return redirect(f"/console/cases/{ref}")


@router.get("/subscribers", response_class=HTMLResponse)
def subscribers_page(request: Request) -> HTMLResponse:
    _staff(request, "coordinator")
    with core(request).read() as tx:
        subscribers = tx.session.scalars(select(Subscriber).order_by(Subscriber.email)).all()
    return page(request, "subscribers.html", subscribers=subscribers)


@router.get("/reports", response_class=HTMLResponse)
def reports_page(request: Request) -> HTMLResponse:
    """Counts, medians and means only, small groups hidden (lifecycle.reports)."""
    _staff(request, "coordinator")
    app = core(request)
    with app.read() as tx:
        tables = {name: reports.build(tx, name) for name in reports.REPORTS}
        figures = reports.summary(tx)
    labels = _report_labels(request)
    waiting = {s.name for w in app.workflows.values() for s in w.states.values() if s.action}
    return page(
        request,
        "console/reports.html",
        tables=tables,
        figures=figures,
        labels=labels,
        charts=report_charts(tables, labels, waiting=waiting),
        minimum=app.settings.report_min_group_size,
    )


@router.get("/reports/{name}.csv")
def report_csv(request: Request, name: str) -> Response:
    _staff(request, "coordinator")
    if name not in reports.REPORTS:
        raise HTTPException(status_code=404, detail="no such report")
    with core(request).read() as tx:
        table = reports.build(tx, name)
    return Response(
        disclosure.to_csv(table),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="mentorlus-{name}.csv"'},
    )


def _report_labels(request: Request) -> dict[str, str]:
    """Words for the reports' keys: workflow, state and topic labels, then the page's own."""
    lang, workflows = language(request), core(request).workflows
    labels = {name: workflow.label[lang] for name, workflow in workflows.items()}
    for workflow in workflows.values():
        labels |= {name: state.label[lang] for name, state in workflow.states.items()}
    labels |= {topic: words[lang] for topic, words in TOPIC_LABELS.items()}
    return labels | {key: words[lang] for key, words in texts()["reports"].items()}
