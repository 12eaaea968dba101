"""Public pages: the mentor directory, a mentor's page, the request and application forms."""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from lifecycle import bulk, intake, services
from lifecycle.directory import Entry, Filters, Page, listed_regions, search, suitable_mentors
from lifecycle.errors import InvalidInput, MentorlusError, Refused
from lifecycle.models import (
    CREDENTIAL_KINDS,
    DEGREE_LEVELS,
    FORMATS,
    LANGUAGES,
    REGIONS,
    Person,
)
from lifecycle.web import auth
from lifecycle.web.app import core, language, page

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
            mentor = tx.session.get(Person, mentor_pk) if mentor_pk else None
            if mentor is None:
                raise InvalidInput("mentor_id", "choose a mentor from the directory")
            data = {**values, "mentor": mentor.email}
            data.pop("mentor_id")
            case = services.submit_request(tx, data=data)
            ref = case.ref
    except InvalidInput as error:
        return _request_form(request, values, {error.field: error.message}, 422)
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
            request, values, {}, 409, refusal=error.reason, rule=error.rule, others=others
        )
    return page(request, "done.html", heading="request.sent", text="request.sent_text", ref=ref)


# The form offers this many certificate rows; the API takes any number.
CREDENTIAL_ROWS = 3
# Form field part → the API's name for it.
CREDENTIAL_PARTS = {"kind": "kind", "issuer": "issuer", "year": "year", "valid": "valid_until"}
APPLICATION_TEXT_FIELDS = (
    "name",
    "email",
    "language",
    "organisation",
    "region",
    "degree_level",
    "degree_field",
    "years_in_social_field",
    "background",
    "capacity",
    "fee_note",
)


def application_values(form: FormData) -> dict[str, Any]:
    """The application form as typed: shown again unchanged when something is wrong."""
    values: dict[str, Any] = {key: str(form.get(key, "")) for key in APPLICATION_TEXT_FIELDS}
    for index in range(CREDENTIAL_ROWS):
        for part in CREDENTIAL_PARTS:
            key = f"credential_{part}_{index}"
            values[key] = str(form.get(key, ""))
    for key in ("topics", "languages", "formats", "regions"):
        values[key] = [str(v) for v in form.getlist(key)]
    values["degree_in_social_work"] = form.get("degree_in_social_work") == "on"
    values["notify_rounds"] = form.get("notify_rounds") == "on"
    return values


def application_data(values: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The application the form's values describe, and which certificate rows it used."""
    data = {key: value for key, value in values.items() if not key.startswith("credential_")}
    rows = [  # the certificate rows with anything typed in them
        index
        for index in range(CREDENTIAL_ROWS)
        if any(values[f"credential_{part}_{index}"] for part in CREDENTIAL_PARTS)
    ]
    data["credentials"] = [
        {
            name: values[f"credential_{part}_{index}"] or None
            for part, name in CREDENTIAL_PARTS.items()
        }
        for index in rows
    ]
    return data, rows


def application_field(field: str, rows: list[int]) -> str:
    """The form field an error names: credentials[1].year → the year of the row it came from."""
    match = re.fullmatch(r"credentials\[(\d+)\]\.(\w+)", field)
    if match is None:
        return field
    parts = {name: part for part, name in CREDENTIAL_PARTS.items()}
    return f"credential_{parts.get(match[2], 'kind')}_{rows[int(match[1])]}"


def _apply_form(
    request: Request, values: dict[str, Any], errors: dict[str, str], status_code: int = 200
) -> HTMLResponse:
    with core(request).read() as tx:
        current = intake.current_round(tx.session, tx.now)
        upcoming = intake.next_round(tx.session, tx.now)
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
        **application_choices(),
    )


def application_choices() -> dict[str, Any]:
    """What the application form offers to choose from."""
    return {
        "degree_levels": DEGREE_LEVELS,
        "credential_kinds": CREDENTIAL_KINDS,
        "credential_rows": CREDENTIAL_ROWS,
        "formats": FORMATS,
        "languages": LANGUAGES,
        "regions": REGIONS,
    }


def blank_application(request: Request) -> dict[str, Any]:
    return {
        "language": language(request),
        "capacity": "2",
        "languages": ["et"],
        "formats": ["in_person", "online"],
    }


@router.get("/apply", response_class=HTMLResponse)
def apply_form(request: Request) -> HTMLResponse:
    return _apply_form(request, blank_application(request), {})


@router.post("/apply", response_class=HTMLResponse)
async def submit_application(request: Request) -> Response:
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    values = application_values(form)
    data, rows = application_data(values)
    try:
        with core(request).unit() as tx:
            ref = services.submit_application(tx, data=data).ref
    except InvalidInput as error:
        return _apply_form(
            request, values, {application_field(error.field, rows): error.message}, 422
        )
    except MentorlusError as error:
        return _apply_form(request, values, {"form": str(error)}, 409)
    return page(request, "done.html", heading="apply.sent", text="apply.sent_text", ref=ref)


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
            bulk.subscribe(tx, email=email, language=language_)
    except InvalidInput as error:
        return _apply_form(request, {"subscribe_email": email}, {"subscribe": error.message}, 422)
    return page(request, "done.html", heading="apply.subscribe", text="apply.subscribed", ref=None)
