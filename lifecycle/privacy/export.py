"""A person's export: everything held about a person or a subscriber with an address, as JSON
data — their rows' own columns, what their cases went through, the mail to them and what each
link was for, their API tokens, the submissions waiting for the address's confirmation.
Never a password hash, a link's token nor an API token's hash.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select

from lifecycle.cases.services import email_address
from lifecycle.errors import NotFound
from lifecycle.store.models import (
    ActionToken,
    Announcement,
    ApiToken,
    Application,
    AuditEvent,
    Case,
    CommitteeVote,
    Feedback,
    OutboxMessage,
    PendingSubmission,
    Person,
    Relation,
    Subscriber,
)
from lifecycle.workflows.engine import Tx


def _row(row: Any, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A row's own columns as JSON values: every column but its id and its links to other rows."""
    values = {}
    for column in row.__table__.columns:
        if column.primary_key or column.foreign_keys or column.key in leave_out:
            continue
        value = getattr(row, column.key)
        values[column.key] = value.isoformat() if isinstance(value, date | datetime) else value
    return values


def export_person(tx: Tx, *, email: str) -> dict[str, Any]:
    """Everything held about the person (or subscriber) with this address, as JSON data."""
    address = email_address({"email": email})
    person = tx.session.scalar(select(Person).where(Person.email == address))
    subscribers = list(tx.session.scalars(select(Subscriber).where(Subscriber.email == address)))
    held = list(
        tx.session.scalars(
            select(PendingSubmission)
            .where(PendingSubmission.email == address)
            .order_by(PendingSubmission.id)
        )
    )
    if person is None and not subscribers and not held:
        raise NotFound(f"nothing is held about {address}")
    reader: list[ColumnElement[bool]] = [OutboxMessage.to_email == address]
    owner: list[ColumnElement[bool]] = [
        ActionToken.subscriber_id.in_([s.id for s in subscribers]),
        ActionToken.id.in_([submission.token_id for submission in held]),
    ]
    data: dict[str, Any] = {"email": address, "person": None}
    if person is not None:
        reader.append(OutboxMessage.to_person_id == person.id)
        owner.append(ActionToken.person_id == person.id)
        data.update(_person_data(tx, person))
        data["api_tokens"] = [
            _row(token, leave_out=("token_sha256",))
            for token in tx.session.scalars(
                select(ApiToken).where(ApiToken.person_id == person.id).order_by(ApiToken.id)
            )
        ]
    data["subscriptions"] = [_row(s) for s in subscribers]
    # Requests and applications sent with the address and not (yet) confirmed by its owner.
    data["pending_submissions"] = [_row(submission) for submission in held]
    # The messages' texts are not stored: each is rendered from these rows when it is sent.
    data["emails"] = [
        {**_row(m, leave_out=("claim_token", "lease_until")), "case": _ref(tx, m.case_id)}
        for m in tx.session.scalars(
            select(OutboxMessage).where(or_(*reader)).order_by(OutboxMessage.id)
        )
    ]
    # What each link was for; never its token (the primary key), half of the link's secret.
    data["links"] = [
        {**_row(t), "case": _ref(tx, t.case_id)}
        for t in tx.session.scalars(
            select(ActionToken).where(or_(*owner)).order_by(ActionToken.created_at)
        )
    ]
    return data


def _ref(tx: Tx, case_id: int | None) -> str | None:
    case = tx.session.get(Case, case_id) if case_id is not None else None
    return case.ref if case is not None else None


def _person_data(tx: Tx, person: Person) -> dict[str, Any]:
    profile = person.profile
    data: dict[str, Any] = {
        "person": {
            **_row(person, leave_out=("password_hash",)),
            "has_password": person.password_hash is not None,
        },
        "profile": profile
        and {**_row(profile), "credentials": [_row(c) for c in profile.credentials]},
        "applications": [
            {
                "case": application.case.ref,
                "state": application.case.state,
                **_row(application),
                "evidence": [_row(e) for e in application.evidence],
                "committee_votes": [_row(v) for v in application.votes],
                "events": _events(tx, application.case_id, person),
            }
            for application in tx.session.scalars(
                select(Application)
                .where(Application.person_id == person.id)
                .order_by(Application.id)
            )
        ],
        "relations": [_relation_data(tx, r, person) for r in relations_of(tx, person)],
        "committee_seats": [
            {"case": _ref(tx, case_id), **_row(seat)}
            for seat, case_id in tx.session.execute(
                select(CommitteeVote, Application.case_id)
                .join(Application, CommitteeVote.application_id == Application.id)
                .where(CommitteeVote.member_id == person.id)
                .order_by(CommitteeVote.id)
            )
        ],
        "announcements": [
            _row(a, leave_out=("body_et", "body_en"))
            for a in tx.session.scalars(
                select(Announcement).where(Announcement.created_by_id == person.id)
            )
        ],
    }
    shown = {r["case"] for r in data["applications"] + data["relations"]}
    data["steps_on_other_cases"] = [
        step
        for step in (
            {"case": _ref(tx, e.case_id), **_row(e)}
            for e in tx.session.scalars(
                select(AuditEvent).where(AuditEvent.actor_id == person.id).order_by(AuditEvent.id)
            )
        )
        if step["case"] not in shown
    ]
    return data


def relations_of(tx: Tx, person: Person) -> list[Relation]:
    """The relations the person is a party to; erasure anonymises the same ones."""
    return list(
        tx.session.scalars(
            select(Relation)
            .where(or_(Relation.mentor_id == person.id, Relation.mentee_id == person.id))
            .order_by(Relation.id)
        )
    )


def _relation_data(tx: Tx, relation: Relation, person: Person) -> dict[str, Any]:
    role = "mentor" if relation.mentor_id == person.id else "mentee"
    other = relation.mentee if role == "mentor" else relation.mentor
    return {
        "case": relation.case.ref,
        "role": role,
        "with": other.name,
        "state": relation.case.state,
        **_row(relation),
        "agreements": [
            {**_row(a), "signatures": [_row(s) for s in a.signatures]} for a in relation.agreements
        ],
        "meetings": [_row(m) for m in relation.meetings],
        # Their own feedback; the other party's is theirs.
        "feedback": [
            _row(f)
            for f in tx.session.scalars(
                select(Feedback).where(
                    Feedback.relation_id == relation.id, Feedback.person_id == person.id
                )
            )
        ],
        "events": _events(tx, relation.case_id, person),
    }


def _events(tx: Tx, case_id: int, person: Person) -> list[dict[str, Any]]:
    # Who else took a step is not the person's data: a committee member's name beside a vote,
    # say. The parties' words (party_text) come only with a relation the person is a party to.
    return [
        {
            **_row(e, leave_out=() if e.actor_id == person.id else ("actor_name",)),
            "by_you": e.actor_id == person.id,
        }
        for e in tx.session.scalars(
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(AuditEvent.id)
        )
    ]
