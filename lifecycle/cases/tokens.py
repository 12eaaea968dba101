"""Personal API tokens: what a staff member's integrations sign in to the JSON API with, in
place of a password checked with argon2 on every call. A token is 32 random bytes, shown once
when it is made; the table keeps its SHA-256, when it was last used and whether it was revoked.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from lifecycle.cases.accounts import STAFF_ROLES, find_login
from lifecycle.errors import InvalidInput, NotFound
from lifecycle.store.models import ApiToken, Person
from lifecycle.workflows.engine import Tx

# Marks the text as a Mentorlus token wherever it turns up (a log, a leaked file).
PREFIX = "mlt_"
RANDOM_BYTES = 32
MAX_NAME = 100  # as the table holds
# A token's last use is written down at most this often, not on every call.
USED_EVERY = timedelta(minutes=1)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(tx: Tx, *, email: str, name: str) -> tuple[ApiToken, str]:
    """A new token for the staff member with this email, and the token itself: the only time
    it can be shown."""
    person = find_login(tx.session, email)
    if person is None or person.role not in STAFF_ROLES:
        raise NotFound(f"{email.strip().lower()} has no staff login")
    label = name.strip()
    if not label:
        raise InvalidInput("name", "is required: say what the token is for")
    # isprintable(): no line break or other control character, nor a lone surrogate.
    if not label.isprintable() or len(label) > MAX_NAME:
        raise InvalidInput("name", f"must be one line of at most {MAX_NAME} characters")
    token = PREFIX + secrets.token_urlsafe(RANDOM_BYTES)
    row = ApiToken(person_id=person.id, name=label, token_sha256=_digest(token), created_at=tx.now)
    tx.session.add(row)
    tx.session.flush()  # its id, to revoke it by
    return row, token


def list_tokens(tx: Tx, *, email: str | None = None) -> list[dict[str, Any]]:
    """Every token, or one staff member's, oldest first; never the token itself."""
    query = select(ApiToken, Person.email).join(Person, Person.id == ApiToken.person_id)
    if email is not None:
        query = query.where(Person.email == email.strip().lower())
    return [
        {
            "id": token.id,
            "email": address,
            "name": token.name,
            "created": local_time(tx, token.created_at),
            "last_used": local_time(tx, token.last_used_at),
            "revoked": local_time(tx, token.revoked_at),
        }
        for token, address in tx.session.execute(query.order_by(ApiToken.id))
    ]


def local_time(tx: Tx, moment: datetime | None) -> str | None:
    """A moment as the programme's clock shows it, to the minute."""
    if moment is None:
        return None
    return moment.astimezone(tx.settings.time_zone).isoformat(timespec="minutes")


def revoke_token(tx: Tx, *, token_id: int) -> ApiToken:
    """Stop a token from working; revoking it again changes nothing."""
    token = tx.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no API token {token_id}")
    if token.revoked_at is None:
        token.revoked_at = tx.now
    return token


def forget_tokens(tx: Tx, *, person_id: int) -> int:
    """Delete a person's tokens, revoked or not (their erasure); how many there were."""
    owned = ApiToken.person_id == person_id
    count = tx.session.scalar(select(func.count()).select_from(ApiToken).where(owned)) or 0
    tx.session.execute(delete(ApiToken).where(owned))
    return count


def holder(session: Session, token: str) -> tuple[ApiToken, Person] | None:
    """The token row and the staff member whose unrevoked token this is; None for any other
    text, and for a token whose holder is no longer staff."""
    found = session.execute(
        select(ApiToken, Person)
        .join(Person, Person.id == ApiToken.person_id)
        .where(ApiToken.token_sha256 == _digest(token), ApiToken.revoked_at.is_(None))
    ).first()
    if found is None or found[1].role not in STAFF_ROLES:
        return None
    return found[0], found[1]


def use_is_due(token: ApiToken, now: datetime) -> bool:
    """Whether this use should be written down (the last one written is a minute old)."""
    return token.last_used_at is None or token.last_used_at <= now - USED_EVERY


def record_use(tx: Tx, *, token_id: int) -> None:
    """Write down that the token was used now, unless another process just did."""
    tx.session.execute(
        update(ApiToken)
        .where(
            ApiToken.id == token_id,
            or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= tx.now - USED_EVERY),
        )
        .values(last_used_at=tx.now)
    )
