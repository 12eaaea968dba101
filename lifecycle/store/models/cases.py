"""The two kinds of case and what each is about: an application, in an intake round, with the
evidence it declares and the committee's votes; a mentoring relation, with its agreements and
their signatures, its meetings and the parties' feedback."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lifecycle.store.models.base import Base
from lifecycle.store.models.people import Person
from lifecycle.store.models.vocabulary import APPLICATION, CASE_PREFIX


class IntakeRound(Base):
    __tablename__ = "intake_rounds"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    opens_at: Mapped[datetime]
    closes_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
    # The schedule date that created it (None: created by a coordinator). A moved or
    # cancelled round keeps it, so the schedule never creates that round again.
    scheduled_for: Mapped[date | None] = mapped_column(Date, unique=True)
    # Each of these is sent once: the flag is set in the transaction that queues the mail.
    announced_at: Mapped[datetime | None]
    reminded_at: Mapped[datetime | None]
    summarized_at: Mapped[datetime | None]


class Case(Base):
    """What a workflow moves: one row per application or mentoring relation."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(primary_key=True)
    workflow: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer)
    opened_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    state_entered_at: Mapped[datetime]
    # The audit event that entered the current state: timers hang off it.
    entry_event_id: Mapped[int | None] = mapped_column(Integer)

    application: Mapped[Application | None] = relationship(viewonly=True, uselist=False)
    relation: Mapped[Relation | None] = relationship(viewonly=True, uselist=False)

    # The engine bumps the version once per step; the UPDATE checks the version it read.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}
    __table_args__ = (Index("ix_cases_workflow_state", "workflow", "state"),)

    @property
    def ref(self) -> str:
        return f"{CASE_PREFIX[self.workflow]}-{self.id}"

    @property
    def subject(self) -> Application | Relation:
        """What the case is about: the application or the mentoring relation."""
        subject = self.application if self.workflow == APPLICATION else self.relation
        assert subject is not None, f"case {self.ref} has no subject"
        return subject


class Application(Base):
    __tablename__ = "applications"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), unique=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    intake_round_id: Mapped[int | None] = mapped_column(ForeignKey("intake_rounds.id"))
    submitted_at: Mapped[datetime]
    interview_at: Mapped[datetime | None]
    interview_place: Mapped[str | None] = mapped_column(String(500))
    # Grows with each (re)scheduling: the SEQUENCE of the calendar invitation.
    interview_sequence: Mapped[int] = mapped_column(Integer, default=0)

    case: Mapped[Case] = relationship()
    person: Mapped[Person] = relationship()
    evidence: Mapped[list[Evidence]] = relationship(order_by="Evidence.id")
    votes: Mapped[list[CommitteeVote]] = relationship(order_by="CommitteeVote.id")


class Evidence(Base):
    """One declared qualification of an application, and who verified it."""

    __tablename__ = "evidence"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # degree, experience, credential
    declared: Mapped[str] = mapped_column(Text)
    document_name: Mapped[str | None] = mapped_column(String(300))
    verified_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    verified_at: Mapped[datetime | None]


class CommitteeVote(Base):
    """A committee member's seat on an interview panel, with their vote once cast."""

    __tablename__ = "committee_votes"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int] = mapped_column(ForeignKey("applications.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    vote: Mapped[str | None] = mapped_column(String(10))  # approve, decline, recuse
    notes: Mapped[str] = mapped_column(Text, default="")
    voted_at: Mapped[datetime | None]

    member: Mapped[Person] = relationship()
    __table_args__ = (UniqueConstraint("application_id", "member_id"),)


class Relation(Base):
    """A mentoring relation between a listed mentor and a mentee."""

    __tablename__ = "relations"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), unique=True)
    mentor_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    mentee_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    topic: Mapped[str] = mapped_column(String(40))
    # Confidential: visible to the two parties only, never logged.
    question: Mapped[str] = mapped_column(Text)
    mentee_is_manager: Mapped[bool] = mapped_column(Boolean)
    mentee_organisation: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime]
    mentor_goes_on_at: Mapped[datetime | None]
    mentee_goes_on_at: Mapped[datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(20))
    # Set when its confidential texts were deleted (retention period, or a party's erasure).
    anonymised_at: Mapped[datetime | None]

    case: Mapped[Case] = relationship()
    mentor: Mapped[Person] = relationship(foreign_keys=[mentor_id])
    mentee: Mapped[Person] = relationship(foreign_keys=[mentee_id])
    agreements: Mapped[list[Agreement]] = relationship(order_by="Agreement.version")
    meetings: Mapped[list[Meeting]] = relationship(order_by="Meeting.starts_at")

    # The directory counts a mentor's taken places over their recent relations only.
    __table_args__ = (Index("ix_relations_mentor_case", "mentor_id", "case_id"),)


class Agreement(Base):
    """One version of a mentoring agreement; reframing adds version n+1."""

    __tablename__ = "agreements"

    id: Mapped[int] = mapped_column(primary_key=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id"))
    version: Mapped[int] = mapped_column(Integer)
    # Confidential fields, like the question.
    question: Mapped[str] = mapped_column(Text)
    goal: Mapped[str] = mapped_column(Text)
    starts_on: Mapped[date] = mapped_column(Date)
    ends_on: Mapped[date] = mapped_column(Date)
    meeting_rhythm: Mapped[str] = mapped_column(String(200))
    fee: Mapped[str] = mapped_column(Text, default="")
    confidentiality: Mapped[bool] = mapped_column(Boolean)
    drafted_at: Mapped[datetime]

    # Who signed is read with the agreement (a sign step reads both): one query, not two.
    # A select(Agreement) therefore needs .unique().
    signatures: Mapped[list[Signature]] = relationship(order_by="Signature.id", lazy="joined")
    __table_args__ = (UniqueConstraint("relation_id", "version"),)

    def signed_by(self, party: str) -> bool:
        return any(signature.party == party for signature in self.signatures)


class Signature(Base):
    __tablename__ = "signatures"

    id: Mapped[int] = mapped_column(primary_key=True)
    agreement_id: Mapped[int] = mapped_column(ForeignKey("agreements.id"))
    party: Mapped[str] = mapped_column(String(10))  # mentor, mentee
    signed_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("agreement_id", "party"),)


class Meeting(Base):
    __tablename__ = "meetings"

    id: Mapped[int] = mapped_column(primary_key=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id"), index=True)
    starts_at: Mapped[datetime]
    place: Mapped[str] = mapped_column(String(500))
    # Confidential: the parties' notes and reflection.
    notes: Mapped[str] = mapped_column(Text, default="")
    # Grows with each move: the SEQUENCE of the calendar invitation.
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    cancelled_at: Mapped[datetime | None]


class Feedback(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(primary_key=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    given_at: Mapped[datetime]

    __table_args__ = (UniqueConstraint("relation_id", "person_id"),)
