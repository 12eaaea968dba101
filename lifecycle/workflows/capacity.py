"""A mentor's places: which relations take one, and how many each mentor has taken.

The request's guards check it before a mentor is asked, and the directory lists only mentors
with a free place; both count the same way.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.orm import Session

from lifecycle.store.models import MENTORING, Case, MentorProfile, Relation

# Relations that take one of the mentor's places.
OCCUPYING_STATES = ("first_meeting", "agreement", "active", "reframed")


def taken_places(session: Session, mentor_ids: list[int]) -> dict[int, int]:
    """How many of their places the relations under way take, for mentors who have any."""
    # On the connection: a request and an accept check it, and the ORM's path costs more than
    # the query.
    rows = session.connection().execute(_taken_places_statement(), {"mentor_ids": mentor_ids})
    return {mentor_id: count for mentor_id, count in rows}


@cache
def _taken_places_statement() -> Select[int, int]:
    return (
        select(Relation.mentor_id, func.count())
        .join(Case, Relation.case_id == Case.id)
        .where(Relation.mentor_id.in_(bindparam("mentor_ids", expanding=True)), *takes_place())
        .group_by(Relation.mentor_id)
    )


def takes_place() -> list[ColumnElement[bool]]:
    """A relation, joined to its case, takes one of its mentor's places."""
    return [Case.state.in_(OCCUPYING_STATES), since_oldest_taking_place()]


def since_oldest_taking_place() -> ColumnElement[bool]:
    """The relation is not older than the oldest case that takes a place.

    Older ones cannot take a place: the index on relations (mentor_id, case_id) leads to
    the mentor's relations from that case on, and as ids grow with time, the search skips
    the long history of relations that ended.
    """
    oldest = (
        select(func.min(Case.id))
        .where(Case.workflow == MENTORING, Case.state.in_(OCCUPYING_STATES))
        .scalar_subquery()
    )
    return Relation.case_id >= oldest


def taken_count(*, many: bool = False) -> Any:
    """How many relations take the places of the profile's person (a correlated count).

    For a few profiles each relation's case is looked up; for many, the cases that take a
    place are listed once and each relation checked against it (`+ 0` keeps SQLite from
    looking each of those cases up among the mentor's relations instead).
    """
    mine = Relation.mentor_id == MentorProfile.person_id
    if many:
        taking = select(Case.id).where(Case.workflow == MENTORING, Case.state.in_(OCCUPYING_STATES))
        return (
            select(func.count())
            .select_from(Relation)
            .where(mine, since_oldest_taking_place(), (Relation.case_id + 0).in_(taking))
            .scalar_subquery()
        )
    return (
        select(func.count())
        .select_from(Relation)
        .join(Case, Relation.case_id == Case.id)
        .where(mine, *takes_place())
        .scalar_subquery()
    )
