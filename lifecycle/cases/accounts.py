"""Staff accounts: coordinators and committee members, their passwords, finding a login, and
their console sessions, kept as rows so that the service can end them."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from lifecycle.cases.services import CONTROL, email_address
from lifecycle.errors import InvalidInput, NotFound
from lifecycle.store.models import Person, StaffSession
from lifecycle.workflows.engine import Tx

STAFF_ROLES = ("coordinator", "committee")
HASHER = PasswordHasher()
MIN_PASSWORD = 12
MAX_EMAIL = 320  # the longest address (RFC 5321), as the people table holds
# A session's latest request is written down at most this often, not on every page read.
SEEN_EVERY = timedelta(minutes=1)


def add_user(tx: Tx, *, name: str, email: str, role: str, password: str) -> Person:
    """Create a coordinator or committee member, or reset their password and role."""
    if role not in STAFF_ROLES:
        raise InvalidInput("role", f"must be one of {', '.join(STAFF_ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise InvalidInput("password", f"must be at least {MIN_PASSWORD} characters")
    address = email_address({"email": email})
    person = tx.session.scalar(select(Person).where(Person.email == address))
    if person is None:
        person = Person(
            email=address,
            name=name.strip() or address,
            language="et",
            organisation="",
            region="",
            created_at=tx.now,
        )
        tx.session.add(person)
    else:
        end_sessions(tx, person_id=person.id)  # a new password or role: log in again
    person.role = role
    person.password_hash = HASHER.hash(password)
    return person


def remove_user(tx: Tx, *, email: str) -> Person:
    """Take a coordinator's or committee member's role and password away, and log them out."""
    address = email_address({"email": email})
    person = tx.session.scalar(select(Person).where(Person.email == address))
    if person is None or person.role not in STAFF_ROLES:
        raise NotFound(f"{address} has no staff login")
    person.role = person.password_hash = None
    end_sessions(tx, person_id=person.id)
    return person


def find_login(session: Session, email: str) -> Person | None:
    """The person who logs in with this email; None for text that cannot be an address
    (too long, or with control characters: PostgreSQL cannot even compare a NUL)."""
    address = email.strip().lower()
    if len(address) > MAX_EMAIL or CONTROL.search(address):
        return None
    return session.scalar(select(Person).where(Person.email == address))


def check_password(person: Person | None, password: str) -> bool:
    if person is None or person.password_hash is None:
        HASHER.hash(password)  # the same work whether or not the address exists
        return False
    try:
        return HASHER.verify(person.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# -- console sessions ------------------------------------------------------------------------


def _row_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_session(tx: Tx, *, person_id: int) -> str:
    """A new console session for this staff member: the random id for its cookie.

    Sessions that ended by themselves (idle, or past their length) are deleted on the way.
    """
    tx.session.execute(
        delete(StaffSession).where(
            or_(
                StaffSession.expires_at <= tx.now,
                StaffSession.last_seen_at <= tx.now - tx.settings.staff_session_idle,
            )
        )
    )
    session_id = secrets.token_urlsafe(32)
    tx.session.add(
        StaffSession(
            id=_row_id(session_id),
            person_id=person_id,
            created_at=tx.now,
            last_seen_at=tx.now,
            expires_at=tx.now + tx.settings.staff_session_max,
        )
    )
    return session_id


def live_session(tx: Tx, *, session_id: str) -> tuple[StaffSession, Person] | None:
    """The session with this id and its staff member; None when it was ended, sat idle too
    long or outlived its length, or its person is no longer staff."""
    row = tx.session.get(StaffSession, _row_id(session_id))
    if row is None or tx.now >= min(
        row.expires_at, row.last_seen_at + tx.settings.staff_session_idle
    ):
        return None
    person = tx.session.get(Person, row.person_id)
    if person is None or person.role not in STAFF_ROLES:
        return None
    return row, person


def note_seen(tx: Tx, *, session_id: str) -> None:
    """Write down the session's latest request, unless one came less than SEEN_EVERY ago
    (another web process may have written it meanwhile)."""
    tx.session.execute(
        update(StaffSession)
        .where(
            StaffSession.id == _row_id(session_id),
            StaffSession.last_seen_at <= tx.now - SEEN_EVERY,
        )
        .values(last_seen_at=tx.now)
    )


def end_sessions(tx: Tx, *, person_id: int) -> None:
    """Log this staff member out of every browser."""
    tx.session.execute(delete(StaffSession).where(StaffSession.person_id == person_id))


def log_out(tx: Tx, *, session_id: str) -> None:
    """End every session of the staff member this session is for (nothing if it is gone)."""
    person_id = tx.session.scalar(
        select(StaffSession.person_id).where(StaffSession.id == _row_id(session_id))
    )
    if person_id is not None:
        end_sessions(tx, person_id=person_id)
