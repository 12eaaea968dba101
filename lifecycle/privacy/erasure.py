"""A person's erasure: it keeps the statistics — cases, states, dates, topics, the audit trail's
steps and ratings — and removes who the person was and what was confidential (SPEC §6).

The person row keeps only a pseudonym, the texts are emptied, their links stop working, mail
still waiting for them is cancelled. The erasure is recorded as a PrivacyEvent holding counts
only.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from sqlalchemy import ColumnElement, delete, or_, select, update

from lifecycle.cases.accounts import end_sessions
from lifecycle.cases.services import email_address
from lifecycle.cases.tokens import forget_tokens
from lifecycle.errors import Refused
from lifecycle.privacy.export import relations_of
from lifecycle.privacy.retention import anonymise_relation, clear_comments
from lifecycle.store.models import (
    ActionToken,
    Application,
    AuditEvent,
    Case,
    LoginFailure,
    OutboxMessage,
    PendingSubmission,
    Person,
    PrivacyEvent,
    PublicMail,
    Relation,
    Subscriber,
)
from lifecycle.workflows.engine import Tx

log = logging.getLogger(__name__)

# RFC 2606: an address under .invalid can never be delivered to.
PSEUDONYM_DOMAIN = "erased.invalid"
# Mail that has not gone out yet; erasure cancels it.
UNSENT = ("pending", "sending", "failed")


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
    held = list(
        tx.session.scalars(select(PendingSubmission).where(PendingSubmission.email == address))
    )
    if person is None and subscriber is None and not held:
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
    elif subscriber is not None:
        pseudonym = (subscriber.email, "")
    else:  # only submissions that were never confirmed
        pseudonym = (f"erased-submission@{PSEUDONYM_DOMAIN}", "")
    if person is not None or subscriber is not None:
        counts["links_revoked"] = _revoke_links(tx, person, subscriber)
    if held:
        counts["pending_submissions"] = _drop_held(tx, held)
    # The throttle's record of failed logins names the address, as the mail limits' does.
    tx.session.execute(delete(LoginFailure).where(LoginFailure.key == f"email:{address}"))
    tx.session.execute(delete(PublicMail).where(PublicMail.key == f"to:{address}"))
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
    end_sessions(tx, person_id=person.id)
    if tokens := forget_tokens(tx, person_id=person.id):
        counts["api_tokens"] = tokens
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
        clear_comments(tx, AuditEvent.case_id == application.case_id)
        counts["applications"] += 1
    for relation in relations_of(tx, person):
        anonymise_relation(tx, relation)
        counts["relations"] += 1
    clear_comments(tx, AuditEvent.actor_id == person.id)
    # Their steps stay in the trail, under the pseudonym.
    tx.session.execute(
        update(AuditEvent).where(AuditEvent.actor_id == person.id).values(actor_name=person.name)
    )


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


def _drop_held(tx: Tx, held: list[PendingSubmission]) -> int:
    """Delete the submissions held for the address and their confirmation links; returns how
    many submissions."""
    token_ids = [submission.token_id for submission in held]
    for message in tx.session.scalars(
        select(OutboxMessage).where(OutboxMessage.link_token_id.in_(token_ids))
    ):
        message.link_token_id = None
    for submission in held:
        tx.session.delete(submission)
    tx.session.flush()
    tx.session.execute(delete(ActionToken).where(ActionToken.id.in_(token_ids)))
    return len(held)


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
