"""Staff accounts: coordinators and committee members, their passwords, and finding a login."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.cases.services import CONTROL, email_address
from lifecycle.errors import InvalidInput
from lifecycle.store.models import Person
from lifecycle.workflows.engine import Tx

STAFF_ROLES = ("coordinator", "committee")
HASHER = PasswordHasher()
MIN_PASSWORD = 12
MAX_EMAIL = 320  # the longest address (RFC 5321), as the people table holds


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
    person.role = role
    person.password_hash = HASHER.hash(password)
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
