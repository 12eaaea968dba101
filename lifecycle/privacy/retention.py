"""The retention of ended relations: past the retention period (`[privacy] retention_days`) a
relation's confidential texts are deleted, and its parties, states, dates and topic stay for
the reports. Erasure anonymises a person's relations the same way. Public submissions whose
confirmation link expired unconfirmed are deleted in the same run.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select

from lifecycle.cases import pending
from lifecycle.store.models import MENTORING, AuditEvent, Case, Feedback, PrivacyEvent, Relation
from lifecycle.workflows.engine import Tx

log = logging.getLogger(__name__)


def anonymise_relation(tx: Tx, relation: Relation) -> None:
    """Delete the relation's confidential texts; its parties, states, dates and topic stay."""
    relation.question = relation.mentee_organisation = ""
    for agreement in relation.agreements:
        agreement.question = agreement.goal = agreement.meeting_rhythm = agreement.fee = ""
    for meeting in relation.meetings:
        meeting.notes = meeting.place = ""
    for feedback in tx.session.scalars(select(Feedback).where(Feedback.relation_id == relation.id)):
        feedback.comment = ""
    clear_comments(tx, AuditEvent.case_id == relation.case_id)
    relation.anonymised_at = relation.anonymised_at or tx.now


def clear_comments(tx: Tx, where: Any) -> None:
    """Empty the comments and the parties' words of the audit events `where` picks: their
    steps, times and choices stay."""
    typed = or_(AuditEvent.comment != "", AuditEvent.party_text != "")
    for event in tx.session.scalars(select(AuditEvent).where(where, typed)):
        event.comment = event.party_text = ""


def run_retention(tx: Tx) -> int:
    """Anonymise relations ended longer ago than the retention period, and delete expired
    public submissions; returns how many relations."""
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
    # Submissions nobody confirmed in time hold an address and what was typed: not kept.
    if dropped := pending.delete_expired(tx):
        log.info("retention: %s expired submissions deleted", dropped)
    return len(relations)
