"""A person's data: export it all, erase it, and anonymise relations past the retention period.

Erasure keeps the statistics — cases, states, dates, topics, the audit trail's steps and
ratings — and removes who the person was and what was confidential (SPEC §6): the person
row keeps only a pseudonym, the texts are emptied, their links stop working, mail still
waiting for them is cancelled. The erasure is recorded as a PrivacyEvent holding counts only.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select

from lifecycle.cases.services import email_address
from lifecycle.errors import NotFound, Refused
from lifecycle.store.models import (
    MENTORING,
    ActionToken,
    Announcement,
    Application,
    AuditEvent,
    Case,
    CommitteeVote,
    Feedback,
    LoginFailure,
    OutboxMessage,
    Person,
    PrivacyEvent,
    Relation,
    Subscriber,
)
from lifecycle.workflows.engine import Tx

log = logging.getLogger(__name__)

# RFC 2606: an address under .invalid can never be delivered to.
PSEUDONYM_DOMAIN = "erased.invalid"
# Mail that has not gone out yet; erasure cancels it.
UNSENT = ("pending", "sending", "failed")


def _row(row: Any, *, leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    """A row's own columns as JSON values: every column but its id and its links to other rows."""
    values = {}
    for column in row.__table__.columns:
        if column.primary_key or column.foreign_keys or column.key in leave_out:
            continue
        value = getattr(row, column.key)
        values[column.key] = value.isoformat() if isinstance(value, date | datetime) else value
    return values


# -- export ----------------------------------------------------------------------------------


def export_person(tx: Tx, *, email: str) -> dict[str, Any]:
    """Everything held about the person (or subscriber) with this address, as JSON data."""
    address = email_address({"email": email})
    person = tx.session.scalar(select(Person).where(Person.email == address))
    subscribers = list(tx.session.scalars(select(Subscriber).where(Subscriber.email == address)))
    if person is None and not subscribers:
        raise NotFound(f"nothing is held about {address}")
    reader: list[ColumnElement[bool]] = [OutboxMessage.to_email == address]
    owner: list[ColumnElement[bool]] = [ActionToken.subscriber_id.in_([s.id for s in subscribers])]
    data: dict[str, Any] = {"email": address, "person": None}
    if person is not None:
        reader.append(OutboxMessage.to_person_id == person.id)
        owner.append(ActionToken.person_id == person.id)
        data.update(_person_data(tx, person))
    data["subscriptions"] = [_row(s) for s in subscribers]
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
        "relations": [_relation_data(tx, r, person) for r in _relations_of(tx, person)],
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


def _relations_of(tx: Tx, person: Person) -> list[Relation]:
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
    return [
        {**_row(e), "by_you": e.actor_id == person.id}
        for e in tx.session.scalars(
            select(AuditEvent).where(AuditEvent.case_id == case_id).order_by(AuditEvent.id)
        )
    ]


# -- erasure ---------------------------------------------------------------------------------


def erase_person(
    tx: Tx, *, email: str, actor_email: str | None = None, force: bool = False
) -> dict[str, Any]:
    """Erase the person and the subscriptions with this address; a second time does nothing."""
    address = email_address({"email": email})
    person = tx.session.scalar(
        select(Person).where(Person.email == address, Person.erased_at.is_(None)).with_for_update()
    )
    subscriber = tx.session.scalar(
        select(Subscriber).where(Subscriber.email == address).with_for_update()
    )
    if person is None and subscriber is None:
        # Never held, or erased before (the address is gone with the erasure).
        return {"email": address, "erased": False, "note": "nothing is held about this address"}
    actor = _coordinator(tx, actor_email) if actor_email else None
    counts: Counter[str] = Counter()
    if person is not None:
        if person.role == "coordinator" and not force:
            raise Refused(
                f"{address} is a coordinator: erasing them removes their login; "
                "pass --force if that is meant",
                rule="coordinator",
            )
        _refuse_open_cases(tx, person)
        _erase(tx, person, counts)
    if subscriber is not None:
        subscriber.email = f"erased-subscriber-{subscriber.id}@{PSEUDONYM_DOMAIN}"
        subscriber.unsubscribed_at = subscriber.unsubscribed_at or tx.now
        counts["subscriptions"] = 1
    if person is not None:
        pseudonym = (person.email, person.name)
    else:
        assert subscriber is not None
        pseudonym = (subscriber.email, "")
    counts["links_revoked"] = _revoke_links(tx, person, subscriber)
    # The throttle's record of failed logins names the address.
    tx.session.execute(delete(LoginFailure).where(LoginFailure.key == f"email:{address}"))
    counts["emails_cancelled"] = _forget_mail(tx, address, person, pseudonym)
    tx.session.add(
        PrivacyEvent(
            at=tx.now,
            kind="erasure",
            person_id=person.id if person else None,
            case_id=None,
            actor_id=actor.id if actor else None,
            counts=dict(counts),
        )
    )
    log.info("erasure: person %s, %s", person.id if person else "-", dict(counts))
    return {"email": address, "erased": True, "pseudonym": pseudonym[0], "counts": dict(counts)}


def _coordinator(tx: Tx, email: str) -> Person:
    actor = tx.session.scalar(select(Person).where(Person.email == email_address({"email": email})))
    if actor is None or actor.role != "coordinator":
        raise Refused(f"{email} is not a coordinator", rule="role")
    return actor


def _refuse_open_cases(tx: Tx, person: Person) -> None:
    """Cases still under way would go on with a party nobody can reach: end them first."""
    cases = tx.session.scalars(
        select(Case)
        .outerjoin(Application, Application.case_id == Case.id)
        .outerjoin(Relation, Relation.case_id == Case.id)
        .where(
            or_(
                Application.person_id == person.id,
                Relation.mentor_id == person.id,
                Relation.mentee_id == person.id,
            )
        )
        .order_by(Case.id)
    )
    open_cases = [
        f"{case.ref} ({case.state})"
        for case in cases
        if not tx.workflows[case.workflow].state(case.state).terminal
    ]
    if open_cases:
        raise Refused(
            f"{', '.join(open_cases)} still under way: withdraw, retire, cancel or close "
            "them first (`mentorlus case advance`), then erase",
            rule="open_cases",
        )


def _erase(tx: Tx, person: Person, counts: Counter[str]) -> None:
    person.name = f"erased-{person.id}"
    person.email = f"erased-{person.id}@{PSEUDONYM_DOMAIN}"
    person.organisation = person.region = ""
    person.role = person.password_hash = None
    person.notify_rounds = False
    person.bulk_opt_out_at = person.bulk_opt_out_at or tx.now
    person.erased_at = tx.now
    if person.profile is not None:
        profile = person.profile
        profile.degree_field = profile.background = profile.fee_note = ""
        for credential in profile.credentials:
            credential.issuer = ""
    applications = tx.session.scalars(
        select(Application).where(Application.person_id == person.id)
    ).all()
    for application in applications:
        for evidence in application.evidence:
            evidence.declared, evidence.document_name = "", None
        for seat in application.votes:
            seat.notes = ""
        _clear_comments(tx, AuditEvent.case_id == application.case_id)
        counts["applications"] += 1
    for relation in _relations_of(tx, person):
        anonymise_relation(tx, relation)
        counts["relations"] += 1
    _clear_comments(tx, AuditEvent.actor_id == person.id)


def _clear_comments(tx: Tx, where: Any) -> None:
    for event in tx.session.scalars(select(AuditEvent).where(where, AuditEvent.comment != "")):
        event.comment = ""


def _forget_mail(tx: Tx, address: str, person: Person | None, pseudonym: tuple[str, str]) -> int:
    """Address the reader's mail to the pseudonym and cancel what has not gone out; returns that.

    A message a worker is sending at this moment may still arrive: its claim is dropped,
    so the worker cannot mark it, and nobody sends it again.
    """
    reader: list[ColumnElement[bool]] = [OutboxMessage.to_email == address]
    if person is not None:
        reader.append(OutboxMessage.to_person_id == person.id)
    cancelled = 0
    for message in tx.session.scalars(select(OutboxMessage).where(or_(*reader))):
        message.to_email, message.to_name = pseudonym
        message.last_error = ""  # a server's refusal quotes the address
        # Announcement keys name their reader's address.
        message.idempotency_key = message.idempotency_key.replace(address, pseudonym[0])
        if message.status in UNSENT:
            message.status, message.lease_until, message.claim_token = "cancelled", None, None
            cancelled += 1
    return cancelled


def _revoke_links(tx: Tx, person: Person | None, subscriber: Subscriber | None) -> int:
    """Delete the reader's link tokens: a deleted one is 'not valid' and offers no fresh link."""
    owners: list[ColumnElement[bool]] = []
    if person is not None:
        owners.append(ActionToken.person_id == person.id)
    if subscriber is not None:
        owners.append(ActionToken.subscriber_id == subscriber.id)
    ids = list(tx.session.scalars(select(ActionToken.id).where(or_(*owners))))
    for message in tx.session.scalars(
        select(OutboxMessage).where(OutboxMessage.link_token_id.in_(ids))
    ):
        message.link_token_id = None
    tx.session.flush()
    tx.session.execute(delete(ActionToken).where(ActionToken.id.in_(ids)))
    return len(ids)


# -- retention -------------------------------------------------------------------------------


def anonymise_relation(tx: Tx, relation: Relation) -> None:
    """Delete the relation's confidential texts; its parties, states, dates and topic stay."""
    relation.question = relation.mentee_organisation = ""
    for agreement in relation.agreements:
        agreement.question = agreement.goal = agreement.meeting_rhythm = agreement.fee = ""
    for meeting in relation.meetings:
        meeting.notes = meeting.place = ""
    for feedback in tx.session.scalars(select(Feedback).where(Feedback.relation_id == relation.id)):
        feedback.comment = ""
    _clear_comments(tx, AuditEvent.case_id == relation.case_id)
    relation.anonymised_at = relation.anonymised_at or tx.now


def run_retention(tx: Tx) -> int:
    """Anonymise relations ended longer ago than the retention period; returns how many."""
    ended = [s.name for s in tx.workflows[MENTORING].states.values() if s.terminal]
    relations = tx.session.scalars(
        select(Relation)
        .join(Case, Relation.case_id == Case.id)
        .where(
            Case.state.in_(ended),
            Case.state_entered_at <= tx.now - tx.settings.retention,
            Relation.anonymised_at.is_(None),
        )
        .order_by(Relation.id)
    ).all()
    for relation in relations:
        anonymise_relation(tx, relation)
        tx.session.add(
            PrivacyEvent(
                at=tx.now,
                kind="retention",
                person_id=None,
                case_id=relation.case_id,
                actor_id=None,
                counts={"relations": 1},
            )
        )
    if relations:
        log.info("retention: %s relations anonymised", len(relations))
    return len(relations)
