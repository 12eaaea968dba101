"""The tables: people and profiles, the two kinds of case, and the effects of every transition."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Workflow names, also the prefix of the readable case IDs.
APPLICATION = "mentor_application"
MENTORING = "mentoring"
CASE_PREFIX = {APPLICATION: "A", MENTORING: "M"}

TOPIC_LABELS = {
    "career": {"et": "karjäärieesmärgid ja eneseareng", "en": "career goals and self-development"},
    "self_care_system": {
        "et": "organisatsiooni enesehoiusüsteemi kujundamine",
        "en": "the organisation's self-care system",
    },
    "management_quality": {
        "et": "juhtimiskvaliteedi edendamine",
        "en": "improving management quality",
    },
    "specific_situation": {
        "et": "konkreetse olukorra lahendamine",
        "en": "resolving a specific situation",
    },
    "best_practice_network": {
        "et": "parimate kogemuste jagamine, võrgustiku tugevdamine",
        "en": "sharing best practice, strengthening the network",
    },
    "change_at_work": {"et": "tööalaste muudatuste toetamine", "en": "supporting changes at work"},
}
TOPICS = tuple(TOPIC_LABELS)
DEGREE_LEVELS = ("none", "bachelor", "master", "doctorate")
CREDENTIAL_KINDS = ("mentor", "coach", "supervisor")
FORMATS = ("in_person", "online")
LANGUAGES = ("et", "en")
# Estonia's counties: where a mentor can meet (the application form offers these).
REGIONS = (
    "Harjumaa",
    "Hiiumaa",
    "Ida-Virumaa",
    "Jõgevamaa",
    "Järvamaa",
    "Läänemaa",
    "Lääne-Virumaa",
    "Põlvamaa",
    "Pärnumaa",
    "Raplamaa",
    "Saaremaa",
    "Tartumaa",
    "Valgamaa",
    "Viljandimaa",
    "Võrumaa",
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; store aware UTC datetimes only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[str]: JSON}


def table(model: type[Base]) -> Table:
    """A model's table, for the statements of the transition path.

    Every step runs them, and through the ORM each costs several times what the SQL does.
    """
    return Base.metadata.tables[model.__tablename__]


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    language: Mapped[str] = mapped_column(String(2), default="et")
    organisation: Mapped[str] = mapped_column(String(200), default="")
    region: Mapped[str] = mapped_column(String(100), default="")
    # Staff role ("coordinator" or "committee"); None for mentors, mentees, applicants.
    role: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[datetime]
    # An applicant who asked to be told when the next intake round opens.
    notify_rounds: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the person unsubscribed from bulk mail (announcements).
    bulk_opt_out_at: Mapped[datetime | None]
    # Staff (coordinators, committee members) log in; argon2 hash, None for everyone else.
    password_hash: Mapped[str | None] = mapped_column(String(200))
    # Set when the person was erased: the row keeps only a pseudonym (lifecycle.privacy).
    erased_at: Mapped[datetime | None]

    profile: Mapped[MentorProfile | None] = relationship(back_populates="person")


class MentorProfile(Base):
    __tablename__ = "mentor_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), unique=True)
    degree_level: Mapped[str] = mapped_column(String(20))
    degree_field: Mapped[str] = mapped_column(String(200))
    degree_in_social_work: Mapped[bool] = mapped_column(Boolean)
    years_in_social_field: Mapped[int] = mapped_column(Integer)
    topics: Mapped[list[str]]
    background: Mapped[str] = mapped_column(Text, default="")
    regions: Mapped[list[str]]
    languages: Mapped[list[str]]
    formats: Mapped[list[str]]
    capacity: Mapped[int] = mapped_column(Integer, default=2)
    fee_note: Mapped[str] = mapped_column(Text, default="")

    person: Mapped[Person] = relationship(back_populates="profile")
    credentials: Mapped[list[Credential]] = relationship(
        back_populates="profile", order_by="Credential.id"
    )


class Credential(Base):
    """A mentor, coach or work-counsellor (supervisor) diploma or certificate."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(primary_key=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("mentor_profiles.id"))
    kind: Mapped[str] = mapped_column(String(20))
    issuer: Mapped[str] = mapped_column(String(200))
    year: Mapped[int] = mapped_column(Integer)
    valid_until: Mapped[date | None] = mapped_column(Date)

    profile: Mapped[MentorProfile] = relationship(back_populates="credentials")


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


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    language: Mapped[str] = mapped_column(String(2), default="et")
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]


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


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))  # None: the system
    actor_role: Mapped[str] = mapped_column(String(20))
    trigger: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[str | None] = mapped_column(String(40))
    to_state: Mapped[str] = mapped_column(String(40))
    # A reason or message typed by the actor; never confidential mentoring content.
    comment: Mapped[str] = mapped_column(Text, default="")


class Timer(Base):
    __tablename__ = "timers"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    entry_event_id: Mapped[int] = mapped_column(ForeignKey("audit_events.id"))
    state: Mapped[str] = mapped_column(String(40))
    name: Mapped[str] = mapped_column(String(60))
    due_at: Mapped[datetime]
    # pending → fired | skipped (too late, or the step was refused) | cancelled (state left)
    status: Mapped[str] = mapped_column(String(12), default="pending")
    finished_at: Mapped[datetime | None]
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (
        UniqueConstraint("case_id", "entry_event_id", "name", "due_at"),
        Index("ix_timers_status_due", "status", "due_at"),
    )


class OutboxMessage(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The same email for the same case, state entry and reader is queued once.
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"), index=True)
    # The step that caused the email; its comment (e.g. an info request) goes into the text.
    event_id: Mapped[int | None] = mapped_column(ForeignKey("audit_events.id"))
    template: Mapped[str] = mapped_column(String(60))
    # None for a subscriber who is not a person in the programme.
    to_person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    to_email: Mapped[str] = mapped_column(String(320))
    to_name: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(2))
    # Bulk mail (announcements) carries unsubscribe headers and skips unsubscribed readers.
    bulk: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the email is about beyond the case, e.g. {"meeting_id": 4, "sequence": 1}.
    refs: Mapped[dict[str, Any]]
    link_token_id: Mapped[str | None] = mapped_column(ForeignKey("action_tokens.id"))
    message_id: Mapped[str] = mapped_column(String(200), unique=True)
    # pending → sending (claimed under a lease) → sent | failed; back to pending to retry.
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    next_attempt_at: Mapped[datetime]
    lease_until: Mapped[datetime | None]
    # Which claim holds the row: a worker whose lease ran out can no longer mark it.
    claim_token: Mapped[str | None] = mapped_column(String(40))
    sent_at: Mapped[datetime | None]
    last_error: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_outbox_status_next", "status", "next_attempt_at"),)


class ActionToken(Base):
    """What a link in an email lets one person do on one case, once, until it expires.

    The link carries the id and an HMAC of the row's fields; the row makes it single-use.
    """

    __tablename__ = "action_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    subscriber_id: Mapped[int | None] = mapped_column(ForeignKey("subscribers.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    action: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class Announcement(Base):
    """A one-off message from a coordinator to all listed mentors or all subscribers."""

    __tablename__ = "announcements"

    id: Mapped[int] = mapped_column(primary_key=True)
    audience: Mapped[str] = mapped_column(String(20))  # mentors, subscribers
    subject_et: Mapped[str] = mapped_column(String(200))
    body_et: Mapped[str] = mapped_column(Text)
    subject_en: Mapped[str] = mapped_column(String(200))
    body_en: Mapped[str] = mapped_column(Text)
    created_by_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class PrivacyEvent(Base):
    """An erasure or a retention run's anonymisation, recorded without the data it removed."""

    __tablename__ = "privacy_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(20))  # erasure, retention
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    # The coordinator who asked for an erasure; None for the retention job or an operator.
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    # What was removed, as counts of rows per kind: never the removed values themselves.
    counts: Mapped[dict[str, Any]]


class LoginFailure(Base):
    """A failed staff login (console or API), counted per address and per client, in the
    database so that every web process counts the same failures."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(400), index=True)  # email:… or client:…
    at: Mapped[datetime]
