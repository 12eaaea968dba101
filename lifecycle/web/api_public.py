"""The public submissions of the JSON API under /api/v1: a mentoring request and a mentor
application, for the association's website and integrations; no login.

A submission changes nobody's row. It is checked as far as it can be without knowing who owns
its address, held, and a link to confirm it is mailed to that address (lifecycle.cases.pending);
the answer is 202 with the same body for every address. What depends on the owner's own cases
is checked when they confirm. Each body is a declared model, every field typed and bounded; a
refused body names one field, as the service's own checks do: {"field", "reason"}. A rule that
refuses gives {"rule", "reason"}; too much mail to one address or from one client, 429.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import date
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
)

from lifecycle.cases import pending
from lifecycle.cases.fields import LINE_LIMIT, MULTILINE_LIMIT
from lifecycle.errors import InvalidInput, Refused
from lifecycle.store.models import (
    CREDENTIAL_KINDS,
    DEGREE_LEVELS,
    FORMATS,
    LANGUAGES,
    REGIONS,
    TOPICS,
)
from lifecycle.web import limits
from lifecycle.web.api_models import FieldProblem, Refusal, text_only
from lifecycle.web.pages import core


def _one_of(allowed: tuple[str, ...], value: str) -> str:
    if value not in allowed:
        raise ValueError(f"must be one of {', '.join(repr(item) for item in allowed)}")
    return value


def _valid_in(allowed: tuple[str, ...]) -> AfterValidator:
    return AfterValidator(partial(_one_of, allowed))


def _enum(allowed: tuple[str, ...]) -> WithJsonSchema:
    """How the OpenAPI shows a text that must be one of `allowed`."""
    return WithJsonSchema({"type": "string", "enum": list(allowed)})


Line = Annotated[str, StringConstraints(strict=True, max_length=LINE_LIMIT)]
Required = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=LINE_LIMIT)]
Multiline = Annotated[str, StringConstraints(strict=True, max_length=MULTILINE_LIMIT)]
Address = Annotated[
    str,
    StringConstraints(strict=True, min_length=3, max_length=320),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 320}),
]
Language = Annotated[str, _valid_in(LANGUAGES), _enum(LANGUAGES)]
Topic = Annotated[str, _valid_in(TOPICS), _enum(TOPICS)]
# Where a person works (or none given), and where a mentor can meet.
Region = Annotated[str, _valid_in(("", *REGIONS)), _enum(("", *REGIONS))]
MeetingRegion = Annotated[str, _valid_in(REGIONS), _enum(REGIONS)]
DegreeLevel = Annotated[str, _valid_in(DEGREE_LEVELS), _enum(DEGREE_LEVELS)]
CredentialKind = Annotated[str, _valid_in(CREDENTIAL_KINDS), _enum(CREDENTIAL_KINDS)]
Format = Annotated[str, _valid_in(FORMATS), _enum(FORMATS)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestBody(Body):
    """A mentee asks a listed mentor for mentoring on one topic and one concrete question."""

    mentor_id: StrictInt = Field(ge=1, le=999_999_999, description="id from GET /api/v1/mentors")
    name: Required
    email: Address = Field(description="the confirmation link is sent here")
    language: Language = Field("et", description="of the emails")
    organisation: Required = Field(description="where the mentee works (mentoring is horizontal)")
    region: Region = Field("", description="a county, Kogu Eesti or Välismaa")
    topic: Topic
    question: Annotated[
        str, StringConstraints(strict=True, min_length=1, max_length=MULTILINE_LIMIT)
    ]
    is_manager: StrictBool = False


class CredentialBody(Body):
    """A mentor, coach or supervisor (work counsellor) diploma or certificate."""

    kind: CredentialKind
    issuer: Required
    year: StrictInt = Field(ge=1950, le=2100)
    valid_until: date | None = Field(None, description="if it expires")


class DocumentsBody(Body):
    """The name of the document sent for each kind of evidence, if any."""

    degree: Line | None = None
    experience: Line | None = None
    credential: Line | None = None


class ApplicationBody(Body):
    """A mentor application inside an open intake round."""

    name: Required
    email: Address = Field(description="the confirmation link is sent here")
    language: Language = Field("et", description="of the emails")
    organisation: Line = ""
    region: Region = Field("", description="where the applicant works")
    notify_rounds: StrictBool = Field(False, description="be told when a later round opens")
    degree_level: DegreeLevel = "none"
    degree_field: Line = ""
    degree_in_social_work: StrictBool = False
    years_in_social_field: StrictInt = Field(ge=0, le=70)
    topics: list[Topic] = Field(min_length=1, max_length=len(TOPICS))
    background: Multiline
    regions: list[MeetingRegion] = Field([], max_length=len(REGIONS))
    languages: list[Language] = Field(min_length=1, max_length=len(LANGUAGES))
    formats: list[Format] = Field(min_length=1, max_length=len(FORMATS))
    capacity: StrictInt = Field(2, ge=1, le=50)
    fee_note: Multiline = ""
    credentials: list[CredentialBody] = Field([], max_length=10)
    documents: DocumentsBody | None = None


class Accepted(BaseModel):
    status: Literal["confirmation_sent"] = "confirmation_sent"
    detail: str


class TooMuchMail(BaseModel):
    detail: str


class SubmissionRefused(BaseModel):
    detail: Refusal | FieldProblem


SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": SubmissionRefused, "description": "a field is wrong, or a rule refused"},
    429: {"model": TooMuchMail, "description": "too much mail to this address or from here lately"},
}


def _named(location: tuple[int | str, ...]) -> str:
    """("body", "credentials", 0, "year") → credentials[0].year"""
    name = ""
    for part in location[1:]:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return name or "body"


class OneFieldErrors(APIRoute):
    """A body is answered with the one field to correct first: text no column stores wherever
    it is (before the model reads anything), else the first thing the model refuses."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            try:
                raw = await request.json()  # kept: the route reads the same body again
            except ValueError:  # not JSON at all: the model's own words say so
                raw = None
            try:
                text_only(raw)
            except InvalidInput as unstorable:
                problem = FieldProblem(field=unstorable.field, reason=unstorable.message)
            else:
                try:
                    return await handle(request)
                except RequestValidationError as error:
                    first = error.errors()[0]
                    reason = str(first["msg"]).removeprefix("Value error, ")
                    problem = FieldProblem(field=_named(tuple(first["loc"])), reason=reason)
            return JSONResponse({"detail": problem.model_dump()}, status_code=422)

        return checked


router = APIRouter(prefix="/api/v1", tags=["v1"], route_class=OneFieldErrors)


def _hold(request: Request, kind: str, data: dict[str, Any]) -> None:
    try:
        with core(request).unit() as tx:
            held = pending.hold(tx, kind=kind, data=data)
            if held.sent:
                limits.spend(tx.session, limits.keys(request, held.email), tx.now)
    except limits.Limited as limited:
        raise HTTPException(
            status_code=429,
            detail="too much mail to this address or from here lately; try again later",
            headers={"Retry-After": str(limited.seconds)},
        ) from None
    except Refused as error:
        raise HTTPException(422, detail={"rule": error.rule, "reason": error.reason}) from None
    except InvalidInput as error:
        raise HTTPException(422, detail={"field": error.field, "reason": error.message}) from None


@router.post(
    "/requests",
    status_code=202,
    summary="Submit a mentoring request; it goes to the mentor once confirmed by email",
    responses=SUBMIT_RESPONSES,
)
def submit_request(request: Request, body: RequestBody) -> Accepted:
    """A link to confirm the request is mailed to its address, and the answer is the same
    whoever owns the address. The request reaches the mentor when the owner confirms it."""
    _hold(request, "request", body.model_dump(mode="json"))
    return Accepted(
        detail="a link to confirm the request is on its way to the address given, unless one "
        "already waits there; the request goes to the mentor once it is confirmed"
    )


@router.post(
    "/applications",
    status_code=202,
    summary="Submit a mentor application; it goes to the coordinators once confirmed by email",
    responses=SUBMIT_RESPONSES,
)
def submit_application(request: Request, body: ApplicationBody) -> Accepted:
    """As a request: confirmed through a link mailed to its address, the same answer for all."""
    _hold(request, "application", body.model_dump(mode="json"))
    return Accepted(
        detail="a link to confirm the application is on its way to the address given, unless "
        "one already waits there; the application goes to the coordinators once it is confirmed"
    )
