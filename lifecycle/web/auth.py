"""Staff logins, sessions, CSRF tokens, link grants and login throttling.

The signed session cookie (Starlette's) carries the CSRF token, the language, the link grants
and, for a staff member, only the random id of their session: who is logged in is read from the
session's row on every request (lifecycle.cases.accounts), so that logging out, a new password
or role and the removal of the login end the session at once.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import HTTPException, Request
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lifecycle.bootstrap import App
from lifecycle.cases import accounts
from lifecycle.cases.accounts import STAFF_ROLES, check_password, find_login
from lifecycle.store import db
from lifecycle.store.models import LoginFailure, Person

# Failed logins are counted per account and client together, so that nobody can lock an
# account by failing from elsewhere: a client that has not failed for an account is never
# refused for it. Per pair the waits grow; per account and per client, a limit stops wide
# guessing — the account's from any client that has already failed for it.
THROTTLE_WINDOW = timedelta(minutes=15)
PAIR_WAITS = {3: timedelta(seconds=30), 4: timedelta(minutes=2)}  # after this many failures
PAIR_LIMIT = 5  # then the pair waits until its oldest failure leaves the window
ACCOUNT_LIMIT = 25  # failures for one account from every client
CLIENT_LIMIT = 25  # failures from one client for every account


@dataclass(frozen=True)
class LoginKeys:
    """What a login attempt's failures are counted under (storable text whatever was typed)."""

    pair: str
    account: str
    client: str


def throttle_keys(request: Request, email: str) -> LoginKeys:
    client = request.client.host if request.client else "?"
    # Whatever was typed, the key is storable text (PostgreSQL refuses NUL, for one).
    typed = "".join(char for char in email.strip().lower() if char.isprintable())[:300]
    return LoginKeys(
        pair=f"pair:{typed}|{client}", account=f"email:{typed}", client=f"client:{client}"
    )


class Throttled(Exception):
    """Too many recent failed logins from this client; it may try again after `wait`."""

    def __init__(self, wait: timedelta) -> None:
        super().__init__(wait)
        self.wait = wait

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.wait.total_seconds()))


def verify_login(app: App, keys: LoginKeys, email: str, password: str) -> Person | None:
    """The staff member with this email and password; None (and a failure counted) if not.

    The password check is slow on purpose (argon2): it runs outside any transaction, since
    inside one it would hold SQLite's write lock all that time. The count of failures and
    the recording of one are transactions of their own, so attempts made at the very same
    moment may pass a limit by as many as run at once.
    """
    with app.read() as tx:
        wait = throttle_wait(tx.session, keys, tx.now)
        if wait:
            raise Throttled(wait)
        person = find_login(tx.session, email)
    if check_password(person, password) and person is not None and person.role in STAFF_ROLES:
        return person
    with app.unit() as tx:
        login_failed(tx.session, keys, tx.now)
    return None


def throttle_wait(session: Session, keys: LoginKeys, now: datetime) -> timedelta | None:
    """How long this client must wait before it may try this account again; None: try now.
    Every web process counts the same failures, in the database."""
    since = now - THROTTLE_WINDOW
    recent = (
        select(LoginFailure.key, func.count(), func.min(LoginFailure.at), func.max(LoginFailure.at))
        .where(
            LoginFailure.key.in_((keys.pair, keys.account, keys.client)), LoginFailure.at > since
        )
        .group_by(LoginFailure.key)
    )
    found = {key: (count, oldest, newest) for key, count, oldest, newest in session.execute(recent)}
    pair, oldest, newest = found.get(keys.pair, (0, now, now))
    account = found.get(keys.account, (0, now, now))
    client = found.get(keys.client, (0, now, now))
    if pair >= PAIR_LIMIT:
        return oldest + THROTTLE_WINDOW - now
    if pair in PAIR_WAITS and now < newest + PAIR_WAITS[pair]:
        return newest + PAIR_WAITS[pair] - now
    if pair and account[0] >= ACCOUNT_LIMIT:
        return account[1] + THROTTLE_WINDOW - now
    if client[0] >= CLIENT_LIMIT:
        return client[1] + THROTTLE_WINDOW - now
    return None


def login_failed(session: Session, keys: LoginKeys, now: datetime) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - THROTTLE_WINDOW))
    session.add_all(LoginFailure(key=key, at=now) for key in (keys.pair, keys.account, keys.client))


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


# Where the signed cookie keeps the id of a staff member's session.
STAFF_SESSION = "staff_session"


def log_in(request: Request, person: Person) -> None:
    """Start a session for this staff member in this browser; nothing of the old is kept."""
    app: App = request.app.state.core
    with app.unit() as tx:
        session_id = accounts.start_session(tx, person_id=person.id)
    request.session.clear()
    request.session[STAFF_SESSION] = session_id
    request.state.staff = person


def log_out(request: Request) -> None:
    """End every session of the staff member logged in here, and forget this browser's."""
    session_id = request.session.get(STAFF_SESSION)
    request.session.clear()
    request.state.staff = None
    if isinstance(session_id, str):
        app: App = request.app.state.core
        with app.unit() as tx:
            accounts.log_out(tx, session_id=session_id)


def staff_member(request: Request) -> Person | None:
    """The staff member this browser is logged in as, from their session's row (read once a
    request); None when nobody is, or their session has ended."""
    if not hasattr(request.state, "staff"):
        session_id = request.session.get(STAFF_SESSION)
        app: App = request.app.state.core
        request.state.staff = _live(app, session_id) if isinstance(session_id, str) else None
    member: Person | None = request.state.staff
    return member


def _live(app: App, session_id: str) -> Person | None:
    """Reading a page writes nothing but, once a minute, the session's latest request. That
    write does not wait for SQLite's write lock: while another process holds it, the page is
    answered all the same, and a request a little later writes it down."""
    with app.read() as tx:
        live = accounts.live_session(tx, session_id=session_id)
        if live is None:
            return None
        session, member = live
        seen_due = session.last_seen_at <= tx.now - accounts.SEEN_EVERY
    if seen_due:
        with contextlib.suppress(*db.UNAVAILABLE), app.unit(wait=False) as tx:
            accounts.note_seen(tx, session_id=session_id)
    return member


def staff_unread(request: Request) -> None:
    """The database cannot answer: pages show the staff member read before, or nobody."""
    if not hasattr(request.state, "staff"):
        request.state.staff = None


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
