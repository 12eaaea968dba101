"""The JSON API under /api/v1: the directory (public) and cases (staff); the public
submissions are in api_public.

Coordinators authenticate with a personal API token (`Authorization: Bearer`, made by
`mentorlus token create`), or with HTTP Basic (their console email and password) — refused over
plain http when the site is served over https. Errors carry the same reasons as the pages: 404
unknown, 409 conflict, 422 with the refusing rule or the wrong field.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from pydantic import BaseModel, Field

from lifecycle.cases import queries, services, tokens
from lifecycle.directory.search import MAX_PAGE, Entry, Filters
from lifecycle.errors import Conflict, InvalidInput, MentorlusError, NotFound, Refused
from lifecycle.store.models import Person
from lifecycle.web import auth
from lifecycle.web.api_models import Advance, FieldProblem, Refusal, text_only
from lifecycle.web.pages import core
from lifecycle.web.public import directory_entries, mentor_entry

router = APIRouter(prefix="/api/v1", tags=["v1"])
BASIC = HTTPBasic(
    auto_error=False,
    description="a coordinator's console email and password; refused over plain http when "
    "the site is served over https",
)
BEARER = HTTPBearer(
    auto_error=False, description="a personal API token, made by `mentorlus token create`"
)


class Problem(BaseModel):
    detail: str


class Unprocessable(BaseModel):
    detail: Refusal | FieldProblem | list[dict[str, Any]] = Field(
        description="a rule's refusal, a wrong field, or (a body of the wrong shape) the "
        "list of what is wrong with it"
    )


STAFF_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {
        "model": Problem,
        "description": "no or wrong coordinator credentials, or an unknown or revoked token",
    },
    403: {
        "model": Problem,
        "description": "not a coordinator, or a password sent over plain http to a site "
        "served over https",
    },
    429: {"model": Problem, "description": "too many failed logins from here or for this address"},
}
CASE_ERRORS: dict[int | str, dict[str, Any]] = {
    **STAFF_ERRORS,
    404: {"model": Problem, "description": "no such case"},
}
ADVANCE_ERRORS: dict[int | str, dict[str, Any]] = {
    **CASE_ERRORS,
    409: {"model": Problem, "description": "someone else changed the case (expected_version)"},
    422: {"model": Unprocessable, "description": "a rule refused the step, or a value is wrong"},
}


def _problem(error: MentorlusError) -> HTTPException:
    if isinstance(error, NotFound):
        return HTTPException(status_code=404, detail=str(error))
    if isinstance(error, Conflict):
        return HTTPException(status_code=409, detail=str(error))
    if isinstance(error, Refused):
        return HTTPException(status_code=422, detail={"rule": error.rule, "reason": error.reason})
    if isinstance(error, InvalidInput):
        return HTTPException(
            status_code=422, detail={"field": error.field, "reason": error.message}
        )
    return HTTPException(status_code=422, detail=str(error))


def coordinator(
    request: Request,
    credentials: Annotated[HTTPBasicCredentials | None, Depends(BASIC)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
) -> Person:
    # The same answer for no credentials, wrong ones, and an unknown or revoked token.
    unauthorised = HTTPException(
        status_code=401,
        detail="coordinator credentials needed",
        headers={"WWW-Authenticate": "Bearer, Basic"},
    )
    if bearer is not None:
        person = _token_holder(request, bearer.credentials)
        if person is None:
            raise unauthorised
        return _only_coordinators(person)
    if credentials is None:
        raise unauthorised
    if core(request).settings.base_url.startswith("https://") and request.url.scheme != "https":
        # Refused before the password is looked at: a client answered over http would go on
        # sending the password in the clear.
        raise HTTPException(
            status_code=403,
            detail="a password is not taken over plain http: this site is served over https, "
            "so call it at its https address",
        )
    keys = auth.throttle_keys(request, credentials.username)
    try:
        person = auth.verify_login(core(request), keys, credentials.username, credentials.password)
    except auth.Throttled as throttled:
        raise HTTPException(
            status_code=429,
            detail="too many failed logins from here; try again later",
            headers={"Retry-After": str(throttled.seconds)},
        ) from None
    if person is None:
        raise unauthorised
    return _only_coordinators(person)


def _token_holder(request: Request, token: str) -> Person | None:
    """The staff member whose token this is; its use is written down at most once a minute,
    so that reading the API does not take the write lock on every call."""
    app = core(request)
    with app.read() as tx:
        found = tokens.holder(tx.session, token)
        due = found is not None and tokens.use_is_due(found[0], tx.now)
    if found is None:
        return None
    if due:
        with app.unit() as tx:
            tokens.record_use(tx, token_id=found[0].id)
    return found[1]


def _only_coordinators(person: Person) -> Person:
    if person.role != "coordinator":
        raise HTTPException(status_code=403, detail="only coordinators use the case API")
    return person


def _mentor(entry: Entry) -> dict[str, Any]:
    person, profile = entry.person, entry.profile
    return {
        "id": person.id,
        "name": person.name,
        "topics": profile.topics,
        "degree_field": profile.degree_field,
        "years_in_social_field": profile.years_in_social_field,
        "background": profile.background,
        "regions": profile.regions,
        "languages": profile.languages,
        "formats": profile.formats,
        "free_places": entry.free,
        "can_mentor_managers": entry.managers,
        "fee_note": profile.fee_note,
    }


@router.get("/mentors", summary="Listed mentors, filtered, by name, a page at a time")
def mentors(
    request: Request,
    response: Response,
    topic: str = "",
    region: str = "",
    language: str = "",
    format: str = "",
    background: str = "",
    free: bool = False,
    managers: bool = False,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
) -> list[dict[str, Any]]:
    """One page of matches; the X-Total-Count header says how many match on all pages and
    the Link header points to the next and previous pages."""
    filters = Filters(
        topic=topic,
        region=region,
        language=language,
        format=format,
        background=background,
        free=free,
        managers=managers,
    )
    found = directory_entries(request, filters, page=page)
    response.headers["X-Total-Count"] = str(found.total)
    links = [
        f'<{request.url.include_query_params(page=number)}>; rel="{rel}"'
        for number, rel in ((found.number + 1, "next"), (found.number - 1, "prev"))
        if 1 <= number <= found.pages
    ]
    if links:
        response.headers["Link"] = ", ".join(links)
    return [_mentor(entry) for entry in found.entries]


@router.get(
    "/mentors/{person_id}",
    summary="One listed mentor",
    responses={404: {"model": Problem, "description": "not a listed mentor"}},
)
def mentor(request: Request, person_id: int) -> dict[str, Any]:
    entry = mentor_entry(request, person_id)
    if entry is None:
        raise HTTPException(status_code=404, detail="no such mentor in the directory")
    return _mentor(entry)


@router.get("/cases", summary="Cases (coordinators)", responses=STAFF_ERRORS)
def cases(
    request: Request,
    staff: Annotated[Person, Depends(coordinator)],
    workflow: str = "",
    state: str = "",
) -> list[dict[str, Any]]:
    with core(request).read() as tx:
        return queries.list_cases(tx, workflow=workflow or None, state=state or None)


@router.get(
    "/cases/{ref}",
    summary="One case with its next steps and timeline (coordinators)",
    responses=CASE_ERRORS,
)
def case(
    request: Request, ref: str, staff: Annotated[Person, Depends(coordinator)]
) -> dict[str, Any]:
    try:
        with core(request).read() as tx:
            return queries.show_case(tx, ref, role="coordinator")
    except MentorlusError as error:
        raise _problem(error) from None


@router.post(
    "/cases/{ref}/advance",
    summary="Take a step on a case (coordinators)",
    responses=ADVANCE_ERRORS,
)
def advance(
    request: Request, ref: str, step: Advance, staff: Annotated[Person, Depends(coordinator)]
) -> dict[str, Any]:
    try:
        text_only(step.model_dump())
        with core(request).unit() as tx:
            event = services.advance_case(
                tx,
                ref=ref,
                trigger=step.trigger,
                actor_email=staff.email,
                values=step.values,
                override_reason=step.override_reason,
                expected_version=step.expected_version,
            )
            return {
                "id": ref.upper(),
                "trigger": event.trigger,
                "from": event.from_state,
                "to": event.to_state,
            }
    except MentorlusError as error:
        raise _problem(error) from None
