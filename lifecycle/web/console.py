"""The coordinator console, behind a staff login: the work queue, the cases, a case's page and
its next step, and an application entered on someone's behalf.

Coordinators see states, dates, topics and the timeline, never the concrete question,
agreements, notes or reflections (SPEC §6): the pages read only lifecycle.cases.queries. The
console's other pages (lifecycle.web.committee, console_admin, console_reports) check their
reader with `staff`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle.cases import queries, services
from lifecycle.errors import Conflict, InvalidInput, NotFound, Refused
from lifecycle.store.models import Person
from lifecycle.web import auth, forms
from lifecycle.web.diagram import svg
from lifecycle.web.pages import core, field_errors, language, page, redirect

router = APIRouter(prefix="/console", include_in_schema=False)


def staff(request: Request, *roles: str) -> Person:
    """The logged-in staff member with one of these roles; otherwise off to the login page."""
    person = auth.staff_member(request)
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
    except auth.Throttled as throttled:
        answer = page(
            request,
            "login.html",
            status_code=429,
            values=values,
            errors={"form": "too many failed attempts from here; try again later"},
        )
        answer.headers["Retry-After"] = str(throttled.seconds)
        return answer
    if person is None:
        return page(
            request,
            "login.html",
            status_code=401,
            values=values,
            errors={"form": "wrong email or password"},
        )
    auth.log_in(request, person)
    target = next if next.startswith("/") and not next.startswith("//") else "/console"
    if person.role == "committee" and target.startswith("/console") and "committee" not in target:
        target = "/console/committee"
    return redirect(target)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    auth.check_csrf(request, csrf)
    auth.log_out(request)
    return redirect("/")


@router.get("", response_class=HTMLResponse)
def work_queue(request: Request) -> HTMLResponse:
    staff(request, "coordinator")
    with core(request).read() as tx:
        queue = queries.work_queue(tx, language=language(request))
        counts = queries.state_counts(tx)
    return page(request, "console.html", queue=queue, counts=counts)


@router.get("/cases", response_class=HTMLResponse)
def case_list(request: Request, workflow: str = "", state: str = "", q: str = "") -> Response:
    staff(request, "coordinator")
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
    staff(request, "coordinator")
    return _case_page(request, ref)


@router.post("/cases/{ref}/advance", response_class=HTMLResponse)
async def advance(request: Request, ref: str) -> Response:
    coordinator = staff(request, "coordinator")
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


@router.get("/applications/new", response_class=HTMLResponse)
def application_form(request: Request) -> HTMLResponse:
    """A coordinator enters an application on someone's behalf (by phone or on paper)."""
    staff(request, "coordinator")
    return page(
        request,
        "application_new.html",
        values=forms.blank_application(request),
        errors={},
        **forms.application_choices(),
    )


@router.post("/applications", response_class=HTMLResponse)
async def application_submit(request: Request) -> Response:
    coordinator = staff(request, "coordinator")
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
        return again(
            422, field_errors(request, error, lambda field: forms.application_field(field, rows))
        )
    except Refused as error:
        return again(409, {"form": str(error)})
    return redirect(f"/console/cases/{ref}")
