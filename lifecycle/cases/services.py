"""Use cases: submit an application, submit a mentoring request, advance a case.

Each runs inside the caller's transaction (a Tx) and never commits on its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import joinedload

from lifecycle.errors import InvalidInput, NotFound, Refused
from lifecycle.store import rows
from lifecycle.store.models import (
    APPLICATION,
    CREDENTIAL_KINDS,
    DEGREE_LEVELS,
    FORMATS,
    LANGUAGES,
    MENTORING,
    TOPICS,
    Application,
    Case,
    Credential,
    Evidence,
    MentorProfile,
    Person,
    Relation,
)
from lifecycle.workflows import engine
from lifecycle.workflows.engine import Tx
from lifecycle.workflows.rounds import current_round
from lifecycle.workflows.spec import CONTROL_IN_TEXT

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Longest texts taken, in characters: a name or a title; a region; a question or background.
LINE_LIMIT = 200
REGION_LIMIT = 100
MULTILINE_LIMIT = 10_000
# A person in one of these states may not start another application.
CURRENT_APPLICATION_STATES = (
    "submitted",
    "eligibility",
    "awaiting_info",
    "interview",
    "listed",
    "paused",
)


# -- input ---------------------------------------------------------------------------------------


def _text(
    data: Mapping[str, Any],
    key: str,
    *,
    required: bool = True,
    multiline: bool = False,
    default: str = "",
    limit: int | None = None,
) -> str:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(key, "must be text")
    if value is None or value.strip() == "":
        if required:
            raise InvalidInput(key, "is required")
        return default
    text = value.strip()
    if not multiline and CONTROL.search(text):
        raise InvalidInput(key, "must be one line without control characters")
    if CONTROL_IN_TEXT.search(text):
        raise InvalidInput(key, "must be text without control characters")
    limit = limit or (MULTILINE_LIMIT if multiline else LINE_LIMIT)
    if len(text) > limit:
        raise InvalidInput(key, f"must be at most {limit} characters (it has {len(text)})")
    return text


def email_address(data: Mapping[str, Any], key: str = "email") -> str:
    """The address in data[key], lower-cased; InvalidInput naming the field otherwise."""
    address = _text(data, key).lower()
    if not EMAIL.match(address) or CONTROL.search(address):
        raise InvalidInput(key, f"'{address}' is not an email address")
    return address


def _int(
    data: Mapping[str, Any], key: str, *, minimum: int, maximum: int, default: int | None = None
) -> int:
    value = data.get(key, default)
    # A float would be cut silently (2.7 → 2); a bool is an int to Python.
    if isinstance(value, bool | float) or not isinstance(value, int | str):
        raise InvalidInput(key, "must be a whole number")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(key, "must be a whole number") from None
    if number < minimum:
        raise InvalidInput(key, f"must be at least {minimum}")
    if number > maximum:
        raise InvalidInput(key, f"must be at most {maximum}")
    return number


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(key, "must be true or false")
    return value


def _choices(data: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, str | list):
        raise InvalidInput(key, f"must be a list of {', '.join(allowed)}")
    items = [value] if isinstance(value, str) else value
    if not items:
        raise InvalidInput(key, f"choose at least one of {', '.join(allowed)}")
    for item in items:
        if not isinstance(item, str) or item not in allowed:
            raise InvalidInput(key, f"'{item}' is not one of {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def _choice(data: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = data.get(key) or default
    if value not in allowed:
        raise InvalidInput(key, f"'{value}' is not one of {', '.join(allowed)}")
    return str(value)


# Built once: a step looks up its people by email.
_PERSON_BY_EMAIL = select(Person).where(Person.email == bindparam("email"))
# A request's guards read the mentor's profile.
_MENTOR_BY_EMAIL = _PERSON_BY_EMAIL.options(joinedload(Person.profile))


def upsert_person(tx: Tx, data: Mapping[str, Any]) -> Person:
    """The person with this email, created or brought up to date from what they typed."""
    email = email_address(data)
    typed = {
        "name": _text(data, "name"),
        "language": _choice(data, "language", LANGUAGES, tx.settings.language),
        "organisation": _text(data, "organisation", required=False),
        "region": _text(data, "region", required=False, limit=REGION_LIMIT),
    }
    person = tx.session.scalar(_PERSON_BY_EMAIL, {"email": email})
    if person is None:
        return rows.add(tx.session, Person(email=email, created_at=tx.now, role=None, **typed))
    changed = {key: value for key, value in typed.items() if getattr(person, key) != value}
    if changed:
        rows.change(tx.session, person, **changed)
    return person


def person_by_email(tx: Tx, email: str, *, query: Select[Person] = _PERSON_BY_EMAIL) -> Person:
    person = tx.session.scalar(query, {"email": email.strip().lower()})
    if person is None:
        raise NotFound(f"no person with the email {email}")
    return person


# -- use cases -------------------------------------------------------------------------------


def submit_application(tx: Tx, *, data: Mapping[str, Any], actor_email: str | None = None) -> Case:
    """A mentor application from the public form, or entered by a coordinator (actor_email)."""
    applicant = upsert_person(tx, data)
    if "notify_rounds" in data:  # told when a later intake round opens
        applicant.notify_rounds = _bool(data, "notify_rounds")
    tx.session.flush()
    actor = person_by_email(tx, actor_email) if actor_email else applicant
    open_application = tx.session.scalar(
        select(Case)
        .join(Application, Application.case_id == Case.id)
        .where(Application.person_id == applicant.id, Case.state.in_(CURRENT_APPLICATION_STATES))
    )
    if open_application is not None:
        raise Refused(
            f"{applicant.email} already has application {open_application.ref} "
            f"({open_application.state}); a new one is possible only after it has ended",
            rule="one_open_application",
        )
    # Through the relationship, so the guards see this profile, not a stale empty one.
    profile = applicant.profile or MentorProfile(person=applicant)
    profile.degree_level = _choice(data, "degree_level", DEGREE_LEVELS, "none")
    profile.degree_field = _text(data, "degree_field", required=profile.degree_level != "none")
    profile.degree_in_social_work = _bool(data, "degree_in_social_work")
    profile.years_in_social_field = _int(data, "years_in_social_field", minimum=0, maximum=70)
    profile.topics = _choices(data, "topics", TOPICS)
    profile.background = _text(data, "background", multiline=True)
    regions = data.get("regions") or [applicant.region]
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise InvalidInput("regions", "must be a list of regions")
    profile.regions = [
        _text({"regions": region}, "regions", limit=REGION_LIMIT) for region in regions if region
    ]
    profile.languages = _choices(data, "languages", LANGUAGES)
    profile.formats = _choices(data, "formats", FORMATS)
    profile.capacity = _int(data, "capacity", minimum=1, maximum=50, default=2)
    profile.fee_note = _text(data, "fee_note", required=False, multiline=True)
    tx.session.add(profile)
    credentials = _credentials(data)
    tx.session.flush()
    for credential in profile.credentials:
        tx.session.delete(credential)
    profile.credentials = credentials

    round_ = current_round(tx.session, tx.now)
    application = Application(
        person_id=applicant.id,
        intake_round_id=round_.id if round_ else None,
        submitted_at=tx.now,
        person=applicant,
    )
    documents = data.get("documents") or {}
    if not isinstance(documents, dict):
        raise InvalidInput("documents", "must name a document per qualification")
    degree = f"{profile.degree_level} in {profile.degree_field or '—'}"
    if profile.degree_in_social_work:
        degree += " (social work)"
    evidence = [
        Evidence(kind="degree", declared=degree, document_name=documents.get("degree")),
        Evidence(
            kind="experience",
            declared=f"{profile.years_in_social_field} years",
            document_name=documents.get("experience"),
        ),
        *(
            Evidence(
                kind="credential",
                declared=f"{c.kind}, {c.issuer}, {c.year}"
                + (f", valid until {c.valid_until}" if c.valid_until else ""),
                document_name=documents.get("credential"),
            )
            for c in credentials
        ),
    ]
    case, _ = engine.open_case(
        tx,
        workflow=tx.workflows[APPLICATION],
        subject=application,
        actor=actor,
        roles=engine.roles_on(application, actor),
    )
    for item in evidence:
        item.application_id = application.id
        rows.add(tx.session, item, to=(application, "evidence"))
    return case


def _credentials(data: Mapping[str, Any]) -> list[Credential]:
    credentials = []
    items = data.get("credentials") or []
    if not isinstance(items, list):
        raise InvalidInput("credentials", "must be a list of certificates")
    for index, item in enumerate(items):
        key = f"credentials[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(key, "must give kind, issuer and year")
        kind = item.get("kind")
        if kind not in CREDENTIAL_KINDS:
            raise InvalidInput(f"{key}.kind", f"must be one of {', '.join(CREDENTIAL_KINDS)}")
        valid_until = item.get("valid_until")
        try:
            until = date.fromisoformat(valid_until) if valid_until else None
        except ValueError:
            raise InvalidInput(f"{key}.valid_until", "must be a date like 2028-12-31") from None
        try:
            issuer, year = _text(item, "issuer"), _int(item, "year", minimum=1950, maximum=2100)
        except InvalidInput as error:  # named as the form and the API know the field
            raise InvalidInput(f"{key}.{error.field}", error.message) from None
        credentials.append(Credential(kind=kind, issuer=issuer, year=year, valid_until=until))
    return credentials


def submit_request(tx: Tx, *, data: Mapping[str, Any], actor_email: str | None = None) -> Case:
    """A mentee asks a listed mentor for mentoring on one topic and one concrete question."""
    mentor = person_by_email(tx, email_address(data, "mentor"), query=_MENTOR_BY_EMAIL)
    mentee = upsert_person(tx, data)
    actor = person_by_email(tx, actor_email) if actor_email else mentee
    relation = Relation(
        mentor_id=mentor.id,
        mentee_id=mentee.id,
        mentor=mentor,
        mentee=mentee,
        topic=_choice(data, "topic", TOPICS, ""),
        question=_text(data, "question", multiline=True),
        mentee_is_manager=_bool(data, "is_manager"),
        mentee_organisation=mentee.organisation,
        requested_at=tx.now,
    )
    case, _ = engine.open_case(
        tx,
        workflow=tx.workflows[MENTORING],
        subject=relation,
        actor=actor,
        roles=engine.roles_on(relation, actor),
    )
    return case


def advance_case(
    tx: Tx,
    *,
    ref: str,
    trigger: str,
    actor_email: str | None,
    values: Mapping[str, Any] | None = None,
    override_reason: str = "",
    expected_version: int | None = None,
) -> engine.Step:
    """Advance a case as the person with this email (None: the system, as timers do)."""
    case, subject = engine.load_case(tx, ref)
    return engine.advance(
        tx,
        case=case,
        trigger=trigger,
        actor=_acting(tx, subject, actor_email) if actor_email else None,
        values=dict(values or {}),
        override_reason=override_reason,
        expected_version=expected_version,
    )


def _acting(tx: Tx, subject: Application | Relation, email: str) -> Person:
    """The person with this email: one of the case's own, loaded with it, or anyone else."""
    address = email.strip().lower()
    own = (subject.mentor, subject.mentee) if isinstance(subject, Relation) else (subject.person,)
    return next((person for person in own if person.email == address), None) or person_by_email(
        tx, email
    )
