"""The mentor directory: listed mentors, a filtered page of them, and those who suit a request.

The filters run in the database and only the page shown is loaded, so that a search stays
cheap with thousands of listed mentors and years of relations (bench/web.py):

- profiles keep topics, regions, languages and formats as JSON lists: PostgreSQL tests them
  with the jsonb `?` operator, SQLite with `json_each`, after a plain text search for the
  value has ruled out most rows;
- a mentor's taken places are counted over their relations from the oldest case that takes
  a place on (ids grow with time: the long history of ended relations is skipped);
- SQLite has no statistics to choose how to check many profiles or a few: without a region
  filter, the listed cases and the cases that take a place are listed once per search;
- each search statement is built once per kind of search and database, and then run with
  the values: building it costs more than running it;
- the regions named in profiles are read again only after a new application.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    Select,
    String,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import TableValuedAlias

from lifecycle.store.models import (
    APPLICATION,
    Application,
    Case,
    MentorProfile,
    Person,
)
from lifecycle.workflows.capacity import taken_count
from lifecycle.workflows.qualifications import can_mentor_managers

PAGE_SIZE = 20
MAX_PAGE = 100_000  # keeps the offset a number every database takes
MAX_ID = 2**31 - 1  # the largest id an integer column holds
LIST_FILTERS = ("region", "topic", "language", "format")  # the most selective first


@dataclass(frozen=True)
class Filters:
    """What a directory search asks for; an empty value does not filter."""

    topic: str = ""
    region: str = ""
    language: str = ""
    format: str = ""
    background: str = ""  # a piece of text in the background or the degree field, any case
    free: bool = False  # only mentors with a free place
    managers: bool = False  # only mentors who may mentor managers
    person_id: int | None = None  # only this mentor


@dataclass(frozen=True)
class Entry:
    person: Person
    profile: MentorProfile
    free: int  # free places
    managers: bool  # may mentor managers


@dataclass(frozen=True)
class Page:
    entries: list[Entry]
    total: int  # matches on all pages
    number: int  # this page, from 1
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def search(session: Session, filters: Filters, *, page: int = 1, size: int = PAGE_SIZE) -> Page:
    """One page of the listed mentors that match, by name, and how many match in all."""
    page = min(max(page, 1), MAX_PAGE)
    if filters.person_id is not None and not 0 < filters.person_id <= MAX_ID:
        return Page([], 0, page, size)
    kind = _Kind.of(session, filters)
    values = {**kind.values(filters), "size": size, "skip": (page - 1) * size}
    text = filters.background.strip().casefold()
    if text:
        # Case-insensitive for every letter (SQL lower() is ASCII-only in SQLite): in Python,
        # over the few columns of the mentors the other filters kept.
        kept = session.execute(_background_statement(kind), values)
        ids = [person_id for person_id, *columns in kept if text in " ".join(columns).casefold()]
        shown = ids[(page - 1) * size : page * size]
        found = select(Person.id.label("person_id"), literal(len(ids)).label("total"))
        entries = _entries(session, found.where(Person.id.in_(shown)).subquery())
        return Page([entry for entry, _ in entries], len(ids), page, size)
    # The page and the number of all matches, in one statement.
    rows = session.execute(_page_statement(kind), values).all()
    if rows or page == 1:
        total = rows[0][-1] if rows else 0
    else:  # past the last page
        total = session.scalar(_count_statement(kind), values) or 0
    return Page(
        [_entry(person, profile, taken) for person, profile, taken, _ in rows], total, page, size
    )


def listed_regions(session: Session) -> list[str]:
    """Every region a listed mentor works in, sorted."""
    named = _named_regions(session)
    if not named:
        return []
    statement = _listed_there_statement(_dialect(session))
    return sorted(session.scalars(statement, {"named": json.dumps(named)}))


# The regions named in any profile, per database, with the applications they were read after.
# A profile is written only with a new application, so the list is read again only then.
_NAMED: dict[str, tuple[tuple[Any, ...], list[str]]] = {}


def _named_regions(session: Session) -> list[str]:
    """Every region named in any profile (listed or not)."""
    count = select(func.count()).select_from(Application).scalar_subquery()
    newest = select(func.max(Application.id)).scalar_subquery()
    version = tuple(session.execute(select(count, newest)).one())
    database = str(session.get_bind().engine.url)
    known = _NAMED.get(database)
    if known is not None and known[0] == version:
        return known[1]
    lists = session.scalars(select(cast(MentorProfile.regions, Text)).distinct())
    named = sorted({region for text in lists for region in json.loads(text)})
    _NAMED[database] = (version, named)
    return named


def listed_mentors(session: Session) -> list[tuple[Person, MentorProfile]]:
    """Mentors whose newest application is listed, by name."""
    rows = session.execute(
        select(Person, MentorProfile)
        .join(MentorProfile, MentorProfile.person_id == Person.id)
        .where(_is_listed(many=True))
        .order_by(Person.name, Person.id)
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
    filters = Filters(topic=topic, free=True, managers=is_manager)
    kind = _Kind.of(session, filters)
    ids = session.scalars(_matching(kind), kind.values(filters))
    candidates = [person_id for person_id in ids if person_id not in exclude]
    people = {p.id: p for p in session.scalars(select(Person).where(Person.id.in_(candidates)))}
    own = organisation.strip().casefold()
    found = [people[i] for i in candidates if people[i].organisation.strip().casefold() != own]
    return found[:limit]


# -- the statements -----------------------------------------------------------------------------


class _Kind(NamedTuple):
    """Which filters a search uses, on which database: one statement for each kind."""

    dialect: str
    lists: tuple[tuple[str, bool], ...]  # the JSON list filters used, and if the value is ASCII
    person: bool
    managers: bool
    free: bool

    @classmethod
    def of(cls, session: Session, filters: Filters) -> _Kind:
        values = ((name, getattr(filters, name)) for name in LIST_FILTERS)
        lists = tuple((name, value.isascii()) for name, value in values if value)
        person = filters.person_id is not None
        return cls(_dialect(session), lists, person, filters.managers, filters.free)

    def values(self, filters: Filters) -> dict[str, Any]:
        """The values of the statement's parameters."""
        values: dict[str, Any] = {"person_id": filters.person_id}
        for name, _ in self.lists:
            value = getattr(filters, name)
            # As JSON writes the value into a list: escaped (as json.dumps does) or not.
            written = (json.dumps(value), json.dumps(value, ensure_ascii=False))
            values |= {name: value, f"{name}_escaped": written[0], f"{name}_raw": written[1]}
        return values


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


@cache
def _matching(kind: _Kind) -> Select[int]:
    """Listed mentors' profiles that match the filters, except the background text, by name."""
    # SQLite checks the conditions in this order: the cheap and selective ones first.
    conditions: list[ColumnElement[bool]] = []
    if kind.person:
        conditions.append(MentorProfile.person_id == bindparam("person_id"))
    for name, plain in kind.lists:
        conditions.append(_holds(kind.dialect, getattr(MentorProfile, f"{name}s"), name, plain))
    if kind.managers:  # qualifications.can_mentor_managers
        conditions.append(MentorProfile.degree_level.in_(("master", "doctorate")))
        conditions.append(MentorProfile.degree_in_social_work.is_(True))
    # Without a region (or one person) to narrow them, a large share of profiles are left.
    many = not kind.person and "region" not in dict(kind.lists)
    conditions.append(_is_listed(many=many))
    if kind.free:
        conditions.append(MentorProfile.capacity > taken_count(many=many))
    return (
        select(MentorProfile.person_id)
        .join(Person, Person.id == MentorProfile.person_id)
        .where(*conditions)
        .order_by(Person.name, Person.id)
    )


@cache
def _page_statement(kind: _Kind) -> Select[Person, MentorProfile, int, int]:
    """A page of matches (parameters `size`, `skip`), each with the number of all matches."""
    found = (
        _matching(kind)
        .add_columns(func.count().over().label("total"))
        .limit(bindparam("size"))
        .offset(bindparam("skip"))
    )
    return _entries_statement(found.subquery())


@cache
def _count_statement(kind: _Kind) -> Select[int]:
    return select(func.count()).select_from(_matching(kind).subquery())


@cache
def _background_statement(kind: _Kind) -> Select[int, str, str]:
    return _matching(kind).add_columns(MentorProfile.background, MentorProfile.degree_field)


def _entries(session: Session, found: Any) -> list[tuple[Entry, int]]:
    """The mentors `found` (a subquery of person_id and total) with their free places."""
    rows = session.execute(_entries_statement(found))
    return [(_entry(person, profile, taken), total) for person, profile, taken, total in rows]


def _entries_statement(found: Any) -> Select[Person, MentorProfile, int, int]:
    return (
        select(Person, MentorProfile, taken_count(), found.c.total)
        .join(found, found.c.person_id == Person.id)
        .join(MentorProfile, MentorProfile.person_id == Person.id)
        .order_by(Person.name, Person.id)
    )


def _entry(person: Person, profile: MentorProfile, taken: int) -> Entry:
    free = max(profile.capacity - taken, 0)
    return Entry(person, profile, free, can_mentor_managers(profile))


@cache
def _listed_there_statement(dialect: str) -> Select[str]:
    """Of the regions in parameter `named` (a JSON list), those where a listed mentor works."""
    named = _items(dialect, bindparam("named", type_=String()))
    held = _items(dialect, MentorProfile.regions)
    # The mentor's regions before whether they are listed: it is the cheaper question.
    works_there = exists(
        select(true()).select_from(held).where(held.c.value == named.c.value).correlate(named)
    )
    listed_there = select(true()).select_from(MentorProfile).where(works_there, _is_listed())
    return select(named.c.value).where(exists(listed_there))


# -- the conditions -----------------------------------------------------------------------------


def _is_listed(*, many: bool = False) -> ColumnElement[bool]:
    """The profile's person is a listed mentor: their newest application's case is listed.

    For a few profiles each case is looked up; for many, the listed cases are listed once and
    each case checked against that list.
    """
    mine = Application.person_id == MentorProfile.person_id
    if many:
        newest = select(Application.case_id).where(mine).order_by(Application.id.desc())
        listed = select(Case.id).where(Case.workflow == APPLICATION, Case.state == "listed")
        return newest.limit(1).scalar_subquery().in_(listed)
    state = (
        select(Case.state)
        .join(Application, Application.case_id == Case.id)
        .where(mine)
        .order_by(Application.id.desc())
        .limit(1)
    )
    return state.scalar_subquery() == "listed"


def _holds(dialect: str, column: Any, name: str, plain: bool) -> ColumnElement[bool]:
    """The JSON list in `column` holds the string in parameter `name`."""
    value: BindParameter[str] = bindparam(name, type_=String())
    if dialect == "postgresql":
        holds: ColumnElement[bool] = cast(column, JSONB).has_key(value)
        return holds
    # Opening json_each costs more than the rest of the row: first a text search for the
    # value as JSON writes it into the list, escaped (as json.dumps does) or not, which
    # every list that holds it passes. Both are the same for plain ASCII.
    written = [f"{name}_escaped"] if plain else [f"{name}_escaped", f"{name}_raw"]
    items = _items(dialect, column)
    return and_(
        or_(*[func.instr(column, bindparam(key, type_=String())) > 0 for key in written]),
        exists(select(true()).select_from(items).where(items.c.value == value)),
    )


def _items(dialect: str, column: Any) -> TableValuedAlias:
    """The strings of a JSON list (a column, or JSON text) as rows with one column, `value`."""
    if dialect == "postgresql":
        elements = func.json_array_elements_text(cast(column, JSON))
        return elements.table_valued("value").render_derived()
    return func.json_each(column).table_valued("value")
