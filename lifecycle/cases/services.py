"""Use cases: submit an application, submit a mentoring request, advance a case; and the
checks of a public submission that can run before its address's owner confirms it.

Each runs inside the caller's transaction (a Tx) and never commits on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import joinedload

from lifecycle.cases import fields

# Re-exported: the other use cases and the privacy functions take these from here.
from lifecycle.cases.fields import CONTROL as CONTROL
from lifecycle.cases.fields import email_address as email_address
from lifecycle.errors import InvalidInput, NotFound, Refused
from lifecycle.store import rows
from lifecycle.store.models import (
    APPLICATION,
    LANGUAGES,
    MENTORING,
    REGIONS,
    TOPICS,
    Application,
    Case,
    Evidence,
    MentorProfile,
    Person,
    Relation,
)
from lifecycle.workflows import engine
from lifecycle.workflows.engine import Tx
from lifecycle.workflows.rounds import current_round

# A request's guards that depend on the mentee's own cases: a public request is checked against
# them only when the owner of its address confirms it (lifecycle.cases.pending).
OWNER_GUARDS = frozenset({"one_open_request"})
# A person whose newest application is in one of these states is a mentor one may choose.
MENTOR_STATES = ("listed", "paused")
# A person in one of these states may not start another application.
CURRENT_APPLICATION_STATES = (
    "submitted",
    "eligibility",
    "awaiting_info",
    "interview",
    "listed",
    "paused",
)


# Built once: a step looks up its people by email.
_PERSON_BY_EMAIL = select(Person).where(Person.email == bindparam("email"))
# A request's guards read the mentor's profile.
_MENTOR_BY_EMAIL = _PERSON_BY_EMAIL.options(joinedload(Person.profile))


def _person_fields(tx: Tx, data: Mapping[str, Any]) -> dict[str, Callable[[], Any]]:
    """How each of a person's fields is read, in the forms' order."""
    return {
        "name": lambda: fields.text(data, "name"),
        "email": lambda: email_address(data),
        "organisation": lambda: fields.text(data, "organisation", required=False),
        "region": lambda: fields.region(data, "region"),
        "language": lambda: fields.choice(data, "language", LANGUAGES, tx.settings.language),
    }


def _request_fields(data: Mapping[str, Any]) -> dict[str, Callable[[], Any]]:
    """How the fields a request adds to the person's are read, in the form's order."""
    return {
        "topic": lambda: fields.choice(data, "topic", TOPICS, ""),
        "question": lambda: fields.text(data, "question", multiline=True),
        "mentee_is_manager": lambda: fields.flag(data, "is_manager"),
    }


def _check_request_fields(tx: Tx, data: Mapping[str, Any]) -> None:
    """Every field of a request, refused all at once."""
    person = _person_fields(tx, data)
    language = person.pop("language")
    # The horizontal rule compares organisations: a request without one would pass it unseen.
    person["organisation"] = lambda: fields.text(data, "organisation")
    fields.collect({**person, **_request_fields(data), "language": language})




def upsert_person(tx: Tx, data: Mapping[str, Any], *, keep_stored: bool = False) -> Person:
    """The person with this email, created or brought up to date from what they typed.

    keep_stored: a known person's stored details stay as they are (what the address's owner
    confirmed is the submission, not a rewrite of who they are).
    """
    typed = fields.collect(_person_fields(tx, data))
    email = typed.pop("email")
    person = tx.session.scalar(_PERSON_BY_EMAIL, {"email": email})
    if person is None:
        return rows.add(tx.session, Person(email=email, created_at=tx.now, role=None, **typed))
    if keep_stored:
        return person
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


def submit_application(
    tx: Tx,
    *,
    data: Mapping[str, Any],
    actor_email: str | None = None,
    keep_stored: bool = False,
) -> Case:
    """A mentor application from the public form, or entered by a coordinator (actor_email).

    keep_stored: a public application that its address's owner confirmed
    (lifecycle.cases.pending); a known person's details, profile and credentials stay as stored.
    """
    applicant = upsert_person(tx, data, keep_stored=keep_stored)
    if "notify_rounds" in data:  # told when a later intake round opens
        notify = fields.flag(data, "notify_rounds")
        if notify or not keep_stored:  # a confirmed submission only ever opts in
            applicant.notify_rounds = notify
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
    declared, credentials = fields.declared_profile(data, works_in=applicant.region)
    documents = fields.documents(data)
    # Through the relationship, so the guards see this profile, not a stale empty one.
    profile = applicant.profile
    if profile is None or not keep_stored:
        profile = profile or MentorProfile(person=applicant)
        for key, value in declared.items():
            setattr(profile, key, value)
        tx.session.add(profile)
        tx.session.flush()
        for credential in profile.credentials:
            tx.session.delete(credential)
        profile.credentials = credentials
    credentials = profile.credentials

    round_ = current_round(tx.session, tx.now)
    application = Application(
        person_id=applicant.id,
        intake_round_id=round_.id if round_ else None,
        submitted_at=tx.now,
        person=applicant,
    )
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


def submit_request(
    tx: Tx,
    *,
    data: Mapping[str, Any],
    actor_email: str | None = None,
    keep_stored: bool = False,
) -> Case:
    """A mentee asks a listed mentor for mentoring on one topic and one concrete question.

    keep_stored: as for submit_application, a known mentee's details stay as stored.
    """
    _check_request_fields(tx, data)
    mentor = _chosen_mentor(tx, data)
    mentee = upsert_person(tx, data, keep_stored=keep_stored)
    actor = person_by_email(tx, actor_email) if actor_email else mentee
    relation = _relation(tx, data, mentor=mentor, mentee=mentee)
    case, _ = engine.open_case(
        tx,
        workflow=tx.workflows[MENTORING],
        subject=relation,
        actor=actor,
        roles=engine.roles_on(relation, actor),
    )
    return case


def _relation(tx: Tx, data: Mapping[str, Any], *, mentor: Person, mentee: Person) -> Relation:
    return Relation(
        mentor_id=mentor.id,
        mentee_id=mentee.id,
        mentor=mentor,
        mentee=mentee,
        **fields.collect(_request_fields(data)),
        # As typed for this request: the horizontal rule is checked against it.
        mentee_organisation=fields.text(data, "organisation", required=False)
        or mentee.organisation,
        requested_at=tx.now,
    )


_MENTOR_BY_ID = (
    select(Person).options(joinedload(Person.profile)).where(Person.id == bindparam("id"))
)
_MENTOR_STATE = (
    select(Case.state)
    .join(Application, Application.case_id == Case.id)
    .where(Application.person_id == bindparam("id"))
    .order_by(Application.id.desc())
    .limit(1)
)


def _chosen_mentor(tx: Tx, data: Mapping[str, Any]) -> Person:
    """The mentor a request names: by `mentor_id`, the directory's id (the public form and API),
    or by the mentor's address (operators, coordinators)."""
    if "mentor_id" not in data:
        return person_by_email(tx, email_address(data, "mentor"), query=_MENTOR_BY_EMAIL)
    unknown = InvalidInput("mentor_id", "choose a mentor from the directory", rule="mentor")
    try:
        mentor_id = fields.whole_number(data, "mentor_id", minimum=1, maximum=999_999_999)
    except InvalidInput:
        raise unknown from None
    mentor = tx.session.scalar(_MENTOR_BY_ID, {"id": mentor_id})
    # Whoever is not a mentor is answered as an id nobody has: the answer tells nothing of them.
    if mentor is None or tx.session.scalar(_MENTOR_STATE, {"id": mentor_id}) not in MENTOR_STATES:
        raise unknown
    return mentor


def check_request(tx: Tx, *, data: Mapping[str, Any]) -> None:
    """What submit_request would refuse whoever owns the address: the fields, the mentor chosen
    and the mentor's rules. OWNER_GUARDS wait for the owner's confirmation. Writes nothing."""
    _check_request_fields(tx, data)
    mentor = _chosen_mentor(tx, data)
    mentee = Person(**fields.collect(_person_fields(tx, data)))
    engine.check_start(
        tx,
        workflow=tx.workflows[MENTORING],
        subject=_relation(tx, data, mentor=mentor, mentee=mentee),
        actor=mentee,
        roles=frozenset({"mentee"}),
        skip=OWNER_GUARDS,
    )


def check_application(tx: Tx, *, data: Mapping[str, Any]) -> None:
    """What submit_application would refuse whoever owns the address: the fields and the intake
    round. An application already under way is the owner's to hear of, on confirming."""
    region = data.get("region")
    # Where the applicant works is the regions' default; a region off the list is refused
    # with the person's fields, not again here.
    works_in = region if region in REGIONS else ""
    checked = fields.collect(
        {
            "person": lambda: fields.collect(_person_fields(tx, data)),
            "notify_rounds": lambda: fields.flag(data, "notify_rounds"),
            "profile": lambda: fields.declared_profile(data, works_in=works_in),
            "documents": lambda: fields.documents(data),
        }
    )
    applicant = Person(**checked["person"])
    engine.check_start(
        tx,
        workflow=tx.workflows[APPLICATION],
        subject=Application(person=applicant, submitted_at=tx.now),
        actor=applicant,
        roles=frozenset({"applicant"}),
    )


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
