"""The mentor directory: listed mentors, and those who suit a mentee's request."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from lifecycle.models import Application, Case, MentorProfile, Person, Relation
from lifecycle.qualifications import can_mentor_managers

# Relations that take one of the mentor's places.
OCCUPYING_STATES = ("first_meeting", "agreement", "active", "reframed")


def taken_places(session: Session, mentor_ids: list[int]) -> dict[int, int]:
    rows = session.execute(
        select(Relation.mentor_id, func.count())
        .join(Case, Relation.case_id == Case.id)
        .where(Relation.mentor_id.in_(mentor_ids), Case.state.in_(OCCUPYING_STATES))
        .group_by(Relation.mentor_id)
    )
    return {mentor_id: count for mentor_id, count in rows}


def listed_mentors(session: Session) -> list[tuple[Person, MentorProfile]]:
    """Mentors whose newest application is listed, by name."""
    newest = (
        select(Application.person_id, func.max(Application.id).label("application_id"))
        .group_by(Application.person_id)
        .subquery()
    )
    rows = session.execute(
        select(Person, MentorProfile)
        .join(newest, newest.c.person_id == Person.id)
        .join(Application, Application.id == newest.c.application_id)
        .join(Case, Case.id == Application.case_id)
        .join(MentorProfile, MentorProfile.person_id == Person.id)
        .where(Case.state == "listed")
        .order_by(Person.name)
    )
    return [(person, profile) for person, profile in rows]


def suitable_mentors(
    session: Session,
    *,
    topic: str,
    organisation: str,
    is_manager: bool,
    exclude: set[int],
    limit: int = 3,
) -> list[Person]:
    """Listed mentors with a free place who hold the topic and may take this mentee."""
    candidates = [
        (person, profile)
        for person, profile in listed_mentors(session)
        if person.id not in exclude
        and topic in profile.topics
        and person.organisation.strip().casefold() != organisation.strip().casefold()
        and (can_mentor_managers(profile) or not is_manager)
    ]
    taken = taken_places(session, [person.id for person, _ in candidates])
    free = [person for person, profile in candidates if taken.get(person.id, 0) < profile.capacity]
    return free[:limit]
