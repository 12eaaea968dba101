"""Staff logins, sessions, CSRF tokens, link grants and login throttling."""

from __future__ import annotations

import secrets
import time
from collections import defaultdict, deque

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle.engine import Tx
from lifecycle.errors import InvalidInput
from lifecycle.models import Person
from lifecycle.services import CONTROL, email_address

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


class Throttle:
    """At most `limit` failed logins per address and per client in `window` seconds.

    Kept in the web process: with several web processes each counts on its own.
    """

    def __init__(self, limit: int = 5, window: float = 900) -> None:
        self.limit, self.window = limit, window
        self.failures: dict[str, deque[float]] = defaultdict(deque)

    def _recent(self, key: str) -> deque[float]:
        stamps, cutoff = self.failures[key], time.monotonic() - self.window
        while stamps and stamps[0] < cutoff:
            stamps.popleft()
        return stamps

    def blocked(self, *keys: str) -> bool:
        return any(len(self._recent(key)) >= self.limit for key in keys)

    def failed(self, *keys: str) -> None:
        for key in keys:
            self._recent(key).append(time.monotonic())


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if not expected or not submitted or not secrets.compare_digest(expected, submitted):
        raise HTTPException(
            status_code=403,
            detail="the form expired or was not sent from this site; reload the page and try again",
        )


def staff_id(request: Request) -> int | None:
    value = request.session.get("staff_id")
    return int(value) if value is not None else None


def grant(
    request: Request, *, person_id: int, case_ref: str | None, action: str, token_id: str
) -> None:
    """What a followed email link lets this browser do, for this session."""
    grants = dict(request.session.get("grants", {}))
    grants[f"{case_ref or '-'}:{action}"] = [person_id, token_id]
    request.session["grants"] = grants


def granted(request: Request, case_ref: str | None, action: str) -> tuple[int, str] | None:
    """The person a link made this browser act for on this case and action, and the link."""
    value = request.session.get("grants", {}).get(f"{case_ref or '-'}:{action}")
    return (int(value[0]), str(value[1])) if value is not None else None


def spent_here(request: Request, token_id: str) -> bool:
    """Whether this browser took a step with this link (it may go on with the page's steps)."""
    return token_id in request.session.get("spent", [])


def mark_spent(request: Request, token_id: str) -> None:
    request.session["spent"] = [*request.session.get("spent", []), token_id]
