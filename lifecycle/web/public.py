"""Public pages: the mentor directory, a mentor's page, the request and application forms."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from lifecycle import bulk, intake, services
from lifecycle.directory import listed_mentors, suitable_mentors, taken_places
from lifecycle.errors import InvalidInput, MentorlusError, Refused
from lifecycle.models import CREDENTIAL_KINDS, DEGREE_LEVELS, FORMATS, LANGUAGES, Person
from lifecycle.qualifications import can_mentor_managers
from lifecycle.web import auth
from lifecycle.web.app import core, language, page

router = APIRouter(include_in_schema=False)


def directory_entries(request: Request, **filters: Any) -> list[dict[str, Any]]:
    """Listed mentors matching the filters, with their free places."""
    with core(request).unit() as tx:
        mentors = listed_mentors(tx.session)
        taken = taken_places(tx.session, [person.id for person, _ in mentors])
    entries = []
    text = (filters.get("background") or "").strip().casefold()
    for person, profile in mentors:
        free = max(profile.capacity - taken.get(person.id, 0), 0)
        if filters.get("topic") and filters["topic"] not in profile.topics:
            continue
        if filters.get("region") and filters["region"] not in profile.regions:
            continue
        if filters.get("language") and filters["language"] not in profile.languages:
            continue
        if filters.get("format") and filters["format"] not in profile.formats:
            continue
        if filters.get("free") and not free:
            continue
        if filters.get("managers") and not can_mentor_managers(profile):
            continue
        if text and text not in f"{profile.background} {profile.degree_field}".casefold():
            continue
        entries.append(
            {
                "person": person,
                "profile": profile,
                "free": free,
                "managers": can_mentor_managers(profile),
            }
        )
    return entries


@router.get("/", response_class=HTMLResponse)
def directory(request: Request) -> HTMLResponse:
    params = request.query_params
    filters: dict[str, Any] = {
        key: params.get(key, "") for key in ("topic", "region", "language", "format", "background")
    }
    filters["free"] = params.get("free") == "on"
    filters["managers"] = params.get("managers") == "on"
    entries = directory_entries(request, **filters)
    with core(request).unit() as tx:
        regions = sorted({r for _, profile in listed_mentors(tx.session) for r in profile.regions})
    return page(
        request,
        "directory.html",
        entries=entries,
        filters=filters,
        regions=regions,
        formats=FORMATS,
        languages=LANGUAGES,
    )


@router.get("/mentors/{person_id}", response_class=HTMLResponse)
def mentor_page(request: Request, person_id: int) -> HTMLResponse:
    entry = next((e for e in directory_entries(request) if e["person"].id == person_id), None)
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
    entry = next(
        (
            e
            for e in directory_entries(request)
            if str(e["person"].id) == str(values.get("mentor_id", ""))
        ),
        None,
    )
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
    # isdigit() alone would take '²' or a number no column holds.
    plain = mentor_id.isascii() and mentor_id.isdigit() and len(mentor_id) <= 9
    mentor_pk = int(mentor_id) if plain else None
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
        with app.unit() as tx:
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


def _apply_form(
    request: Request, values: dict[str, Any], errors: dict[str, str], status_code: int = 200
) -> HTMLResponse:
    with core(request).unit() as tx:
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
        degree_levels=DEGREE_LEVELS,
        credential_kinds=CREDENTIAL_KINDS,
        formats=FORMATS,
        languages=LANGUAGES,
    )


@router.get("/apply", response_class=HTMLResponse)
def apply_form(request: Request) -> HTMLResponse:
    return _apply_form(
        request,
        {
            "language": language(request),
            "capacity": "2",
            "languages": ["et"],
            "formats": ["in_person", "online"],
        },
        {},
    )


@router.post("/apply", response_class=HTMLResponse)
async def submit_application(request: Request) -> Response:
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    values: dict[str, Any] = {
        key: str(form.get(key, ""))
        for key in (
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
            "credential_kind",
            "credential_issuer",
            "credential_year",
            "credential_valid",
        )
    }
    for key in ("topics", "languages", "formats"):
        values[key] = [str(v) for v in form.getlist(key)]
    values["degree_in_social_work"] = form.get("degree_in_social_work") == "on"
    values["notify_rounds"] = form.get("notify_rounds") == "on"
    data = {key: value for key, value in values.items() if not key.startswith("credential_")}
    data["regions"] = [values["region"]] if values["region"] else []
    if values["credential_kind"]:
        data["credentials"] = [
            {
                "kind": values["credential_kind"],
                "issuer": values["credential_issuer"],
                "year": values["credential_year"] or None,
                "valid_until": values["credential_valid"] or None,
            }
        ]
    try:
        with core(request).unit() as tx:
            ref = services.submit_application(tx, data=data).ref
    except InvalidInput as error:
        field = error.field.replace("credentials[0].", "credential_")
        return _apply_form(request, values, {field: error.message}, 422)
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
