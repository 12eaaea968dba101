"""Public pages: the mentor directory, a mentor's page, the request and application forms.

A request or an application sent here changes nobody's row: it waits for the owner of its
address to confirm it (lifecycle.cases.pending, the page lifecycle.web.confirm), and the answer
is the same whoever that is. The mail it sends is limited per address and client (`limits`).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle.cases import pending
from lifecycle.cases.pending import Held
from lifecycle.cases.services import email_address
from lifecycle.directory.search import (
    Entry,
    Filters,
    Page,
    listed_regions,
    search,
    suitable_mentors,
)
from lifecycle.errors import InvalidInput, MentorlusError, Refused
from lifecycle.mail import bulk
from lifecycle.store.models import (
    FORMATS,
    LANGUAGES,
    REGIONS,
)
from lifecycle.web import auth, forms, limits
from lifecycle.web.pages import core, field_errors, language, page, refusal_text
from lifecycle.workflows import rounds
from lifecycle.workflows.engine import Tx

router = APIRouter(include_in_schema=False)


def directory_entries(request: Request, filters: Filters, *, page: int = 1) -> Page:
    """One page of the listed mentors matching the filters, with their free places."""
    with core(request).read() as tx:
        return search(tx.session, filters, page=page)


def mentor_entry(request: Request, person_id: int | None) -> Entry | None:
    """A listed mentor's directory entry; None for anyone else."""
    if person_id is None:
        return None
    entries = directory_entries(request, Filters(person_id=person_id)).entries
    return entries[0] if entries else None


def _number(text: str | None) -> int | None:
    """A plain positive number that fits an id column (isdigit() alone would take '²')."""
    text = text or ""
    return int(text) if text.isascii() and text.isdigit() and 0 < len(text) <= 9 else None


def page_url(filters: Filters, number: int) -> str:
    """The directory URL of another page of the same search."""
    params: dict[str, str | int] = {
        key: value
        for key, value in (
            ("topic", filters.topic),
            ("region", filters.region),
            ("language", filters.language),
            ("format", filters.format),
            ("background", filters.background),
        )
        if value
    }
    params.update({key: "on" for key in ("free", "managers") if getattr(filters, key)})
    if number > 1:
        params["page"] = number
    return f"/?{urlencode(params)}" if params else "/"


@router.get("/", response_class=HTMLResponse)
def directory(request: Request) -> HTMLResponse:
    params = request.query_params
    filters = Filters(
        topic=params.get("topic", ""),
        region=params.get("region", ""),
        language=params.get("language", ""),
        format=params.get("format", ""),
        background=params.get("background", ""),
        free=params.get("free") == "on",
        managers=params.get("managers") == "on",
    )
    with core(request).read() as tx:
        found = search(tx.session, filters, page=_number(params.get("page")) or 1)
        regions = listed_regions(tx.session)
    return page(
        request,
        "directory.html",
        found=found,
        previous=page_url(filters, min(found.number - 1, found.pages))
        if found.number > 1
        else None,
        next=page_url(filters, found.number + 1) if found.number < found.pages else None,
        filters=filters,
        regions=regions,
        formats=FORMATS,
        languages=LANGUAGES,
    )


@router.get("/mentors/{person_id}", response_class=HTMLResponse)
def mentor_page(request: Request, person_id: int) -> HTMLResponse:
    entry = mentor_entry(request, person_id)
    if entry is None:
        raise HTTPException(status_code=404, detail="no such mentor in the directory")
    return page(request, "mentor.html", entry=entry)


def _request_form(
    request: Request,
    values: dict[str, Any],
    errors: dict[str, str],
    status_code: int = 200,
    **more: Any,
) -> HTMLResponse:
    entry = mentor_entry(request, _number(str(values.get("mentor_id", ""))))
    return page(
        request,
        "request.html",
        status_code=status_code,
        values=values,
        errors=errors,
        entry=entry,
        regions=REGIONS,
        **more,
    )


@router.get("/request", response_class=HTMLResponse)
def request_form(request: Request, mentor: int | None = None) -> HTMLResponse:
    return _request_form(request, {"mentor_id": mentor or "", "language": language(request)}, {})


@router.post("/request", response_class=HTMLResponse)
def submit_request(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    mentor_id: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    language_: Annotated[str, Form(alias="language")] = "et",
    organisation: Annotated[str, Form()] = "",
    region: Annotated[str, Form()] = "",
    topic: Annotated[str, Form()] = "",
    question: Annotated[str, Form()] = "",
    is_manager: Annotated[bool, Form()] = False,
) -> Response:
    auth.check_csrf(request, csrf)
    values = {
        "mentor_id": mentor_id,
        "name": name,
        "email": email,
        "language": language_,
        "organisation": organisation,
        "region": region,
        "topic": topic,
        "question": question,
        "is_manager": is_manager,
    }
    app = core(request)
    mentor_pk = _number(mentor_id)
    try:
        with app.unit() as tx:
            held = _hold(request, tx, "request", values)
    except limits.Limited as limited:
        return limits.answer(request, limited)
    except InvalidInput as error:
        return _request_form(request, values, field_errors(request, error), 422)
    except Refused as error:
        with app.read() as tx:
            others = suitable_mentors(
                tx.session,
                topic=topic,
                organisation=organisation,
                is_manager=is_manager,
                exclude={mentor_pk} if mentor_pk else set(),
            )
        return _request_form(
            request,
            values,
            {},
            409,
            refusal=refusal_text(request, error),
            rule=error.rule,
            others=others,
        )
    return _held_page(request, "request", held)


def _hold(request: Request, tx: Tx, kind: str, data: dict[str, Any]) -> Held:
    """Hold a public submission for its address's owner to confirm; its confirmation email
    counts against the limits."""
    held = pending.hold(tx, kind=kind, data=data)
    if held.sent:
        limits.spend(tx.session, limits.keys(request, held.email), tx.now)
    return held


def _held_page(request: Request, section: str, held: Held) -> HTMLResponse:
    """The same answer whoever owns the address: a link to confirm went there, or waits there."""
    outcome = "confirm_sent" if held.sent else "confirm_waiting"
    return page(
        request, "done.html", heading=f"{section}.{outcome}", text=f"{section}.{outcome}_text"
    )


def _apply_form(
    request: Request, values: dict[str, Any], errors: dict[str, str], status_code: int = 200
) -> HTMLResponse:
    with core(request).read() as tx:
        current = rounds.current_round(tx.session, tx.now)
        upcoming = rounds.next_round(tx.session, tx.now)
        zone = tx.settings.time_zone
    return page(
        request,
        "apply.html",
        status_code=status_code,
        values=values,
        errors=errors,
        current=current,
        upcoming=upcoming,
        zone=zone,
        **forms.application_choices(),
    )


@router.get("/apply", response_class=HTMLResponse)
def apply_form(request: Request) -> HTMLResponse:
    return _apply_form(request, forms.blank_application(request), {})


@router.post("/apply", response_class=HTMLResponse)
async def submit_application(request: Request) -> Response:
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    values = forms.application_values(form)
    data, rows = forms.application_data(values)
    try:
        with core(request).unit() as tx:
            held = _hold(request, tx, "application", data)
    except limits.Limited as limited:
        return limits.answer(request, limited)
    except InvalidInput as error:
        named = field_errors(request, error, lambda field: forms.application_field(field, rows))
        return _apply_form(request, values, named, 422)
    except MentorlusError as error:
        return _apply_form(request, values, {"form": str(error)}, 409)
    return _held_page(request, "apply", held)


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    email: Annotated[str, Form()] = "",
    language_: Annotated[str, Form(alias="language")] = "et",
) -> Response:
    auth.check_csrf(request, csrf)
    try:
        with core(request).unit() as tx:
            address = email_address({"email": email})
            waiting = bulk.confirmation_waiting(tx, email=address)
            subscriber = bulk.subscribe(tx, email=address, language=language_)
            if not waiting and subscriber.confirmed_at is None:
                limits.spend(tx.session, limits.keys(request, address), tx.now)
    except limits.Limited as limited:
        return limits.answer(request, limited)
    except InvalidInput as error:
        said = field_errors(request, error, lambda _: "subscribe")
        return _apply_form(request, {"subscribe_email": email}, said, 422)
    # An address already subscribed hears the same as one that is not.
    text = "apply.subscribe_waiting" if waiting else "apply.subscribed"
    return page(request, "done.html", heading="apply.subscribe", text=text)
