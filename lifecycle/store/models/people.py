"""The people of the programme: staff with their personal API tokens, applicants, mentors with
their profile and credentials, mentees; and the subscribers who are told of intake rounds
without being people in it."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lifecycle.store.models.base import Base


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


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    language: Mapped[str] = mapped_column(String(2), default="et")
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]
    unsubscribed_at: Mapped[datetime | None]


class ApiToken(Base):
    """A staff member's personal token for the JSON API (`mentorlus token create`): shown once,
    kept only as its SHA-256 — the token is 32 random bytes, so a fast hash is as safe as a
    slow one, and finds the row in one lookup. A revoked token stays, to show when it was."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))  # what it is for, e.g. "association website"
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)  # hex
    created_at: Mapped[datetime]
    # Written at most once a minute: an integration's calls should not each have to write.
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
