"""Staff logins, sessions, CSRF tokens, link grants and login throttling."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from fastapi import HTTPException, Request
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lifecycle.bootstrap import App
from lifecycle.cases.accounts import STAFF_ROLES, check_password, find_login
from lifecycle.store.models import LoginFailure, Person

# At most this many failed logins per address and per client in the window; then 429.
THROTTLE_LIMIT = 5
THROTTLE_WINDOW = timedelta(minutes=15)


def throttle_keys(request: Request, email: str) -> tuple[str, str]:
    client = request.client.host if request.client else "?"
    # Whatever was typed, the key is storable text (PostgreSQL refuses NUL, for one).
    typed = "".join(char for char in email.strip().lower() if char.isprintable())
    return f"email:{typed[:300]}", f"client:{client}"


class Throttled(Exception):
    """Too many recent failed logins for the address or the client."""


def verify_login(app: App, keys: tuple[str, ...], email: str, password: str) -> Person | None:
    """The staff member with this email and password; None (and a failure counted) if not.

    The password check is slow on purpose (argon2): it runs outside any transaction, since
    inside one it would hold SQLite's write lock all that time. The count of failures and
    the recording of one are transactions of their own, so attempts made at the very same
    moment may pass the limit by as many as run at once.
    """
    with app.read() as tx:
        if throttled(tx.session, keys, tx.now):
            raise Throttled
        person = find_login(tx.session, email)
    if check_password(person, password) and person is not None and person.role in STAFF_ROLES:
        return person
    with app.unit() as tx:
        login_failed(tx.session, keys, tx.now)
    return None


def throttled(session: Session, keys: tuple[str, ...], now: datetime) -> bool:
    """Too many recent failures for the address or the client (every web process counts)."""
    recent = (
        select(LoginFailure.key, func.count())
        .where(LoginFailure.key.in_(keys), LoginFailure.at > now - THROTTLE_WINDOW)
        .group_by(LoginFailure.key)
    )
    return any(count >= THROTTLE_LIMIT for _, count in session.execute(recent))


def login_failed(session: Session, keys: tuple[str, ...], now: datetime) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - THROTTLE_WINDOW))
    session.add_all(LoginFailure(key=key, at=now) for key in keys)


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
