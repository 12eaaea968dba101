"""Links in emails: signed, expiring, single-use, bound to one person, one case and one action.

The link carries a random token id and an HMAC over the token's row (id, person or
subscriber, case, action, expiry), so a link cannot be forged or re-aimed. Using it marks
the row, so it works once. Using means acting: opening a link spends nothing, because mail
scanners open every link in a message before its reader does. The browser that spent a case
link may take its page's further steps for a while ([web] link_grace_minutes); what a browser
was granted by a link is checked against the token's row on every request (`check_grant`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from lifecycle.config import Settings
from lifecycle.errors import Refused
from lifecycle.store.models import ActionToken, Person

# A token id (urlsafe base64) and its hex signature.
LINK_SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}\.[0-9a-f]{1,64}")


def _signature(token: ActionToken, key: bytes) -> str:
    message = "|".join(
        str(part)
        for part in (
            token.id,
            token.person_id,
            token.subscriber_id,
            token.case_id,
            token.action,
            int(token.expires_at.timestamp()),
        )
    )
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:32]


def issue(session: Session, row: dict[str, Any]) -> ActionToken:
    """A new token row (from `token_row`), in the caller's transaction."""
    token = ActionToken(**row)
    session.add(token)
    return token


def token_row(
    settings: Settings,
    *,
    action: str,
    now: datetime,
    person_id: int | None = None,
    subscriber_id: int | None = None,
    case_id: int | None = None,
    valid_for: timedelta | None = None,
) -> dict[str, Any]:
    """The values of a new token: for `issue`, or for inserting many in one statement."""
    return {
        "id": secrets.token_urlsafe(18),
        "person_id": person_id,
        "subscriber_id": subscriber_id,
        "case_id": case_id,
        "action": action,
        "created_at": now,
        "expires_at": now + (valid_for or settings.link_valid),
        "used_at": None,
    }


def url(token: ActionToken, settings: Settings) -> str:
    return f"{settings.base_url}/l/{text(token, settings)}"


def text(token: ActionToken, settings: Settings) -> str:
    """What a link carries: the token id and its signature."""
    return f"{token.id}.{_signature(token, settings.secret_key)}"


def find(
    session: Session, settings: Settings, text: str, *, lock: bool = False
) -> ActionToken | None:
    """The token a link names when its signature is right; nothing is marked used.

    Text that is not a token id and a hex signature is never looked up at all.
    """
    if not LINK_SHAPE.fullmatch(text):
        return None
    token_id, _, signature = text.partition(".")
    token = session.get(ActionToken, token_id, with_for_update=lock)
    expected = _signature(token, settings.secret_key).encode() if token else b""
    return token if token and hmac.compare_digest(signature.encode(), expected) else None


def check_open(token: ActionToken, *, now: datetime, spent_here: bool, grace: timedelta) -> None:
    """Refused unless the link may still be acted on: not expired, and either unspent or
    spent by this browser (spent_here) less than `grace` ago."""
    if token.expires_at <= now:
        raise Refused("this link has expired", rule="link_expired")
    if token.used_at is not None and (not spent_here or token.used_at + grace <= now):
        raise Refused("this link has already been used", rule="link_used")


def check_grant(
    session: Session,
    token_id: str,
    *,
    person_id: int,
    now: datetime,
    spent_here: bool,
    grace: timedelta,
) -> None:
    """Refused unless what a link granted a browser still holds: its token is still there
    (erasure deletes a person's tokens), for this person, who was not erased, and open."""
    token = session.get(ActionToken, token_id)
    person = session.get(Person, person_id)
    if token is None or token.person_id != person_id or person is None or person.erased_at:
        raise Refused("this link is not valid", rule="link_invalid")
    check_open(token, now=now, spent_here=spent_here, grace=grace)


def spend(
    session: Session, token_id: str, *, now: datetime, spent_here: bool, grace: timedelta
) -> None:
    """Mark a case-action link used by the step about to be taken; Refused when it cannot be.

    spent_here: this browser spent it before, and may go on taking the page's steps until
    `grace` has passed since.
    """
    token = session.get(ActionToken, token_id, with_for_update=True)
    if token is None:
        raise Refused("this link is not valid", rule="link_invalid")
    check_open(token, now=now, spent_here=spent_here, grace=grace)
    if token.used_at is None:
        token.used_at = now


def redeem(session: Session, settings: Settings, text: str, *, now: datetime) -> ActionToken:
    """The token a link stands for, marked used; Refused says why a link no longer works."""
    token = find(session, settings, text, lock=True)
    if token is None:
        raise Refused("this link is not valid", rule="link_invalid")
    if token.used_at is not None:
        raise Refused("this link has already been used", rule="link_used")
    if token.expires_at <= now:
        raise Refused("this link has expired", rule="link_expired")
    token.used_at = now
    return token
