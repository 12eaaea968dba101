"""Public submissions held until the owner of their address confirms them (SPEC §6a).

A request or an application from the public form or the public API changes nobody's row. What
can be checked without knowing who owns the address is checked at once (`services.check_*`);
the submission is stored as a PendingSubmission and a link to confirm it is mailed to the
address. Opening the link only shows what waits (mail scanners open links); the owner's button
submits it through the service, a known person's stored details kept, and the checks that
depend on their own cases run then. At most one waits per address and kind. An expired one is
deleted by the next submission for its address, or by the nightly retention run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from lifecycle.cases import services
from lifecycle.errors import Refused
from lifecycle.store.models import Case, PendingSubmission
from lifecycle.workflows import links, outbox
from lifecycle.workflows.engine import Tx

# What can be held, and the action of its confirmation link.
LINK_ACTIONS = {"request": "confirm_request", "application": "confirm_application"}
KIND_OF_ACTION = {action: kind for kind, action in LINK_ACTIONS.items()}
# Long enough to find the email the next day, short enough that little waits unconfirmed.
VALID_FOR = timedelta(days=2)

_CHECKS: dict[str, Callable[..., None]] = {
    "request": services.check_request,
    "application": services.check_application,
}
_SUBMITS: dict[str, Callable[..., Case]] = {
    "request": services.submit_request,
    "application": services.submit_application,
}


@dataclass(frozen=True)
class Held:
    """A submission taken: `sent` a confirmation link to `email`, or not, because one of its
    kind already waits there."""

    email: str
    sent: bool


@dataclass(frozen=True)
class Waiting:
    """What a confirmation link stands for: `state` is waiting, confirmed or expired; `data` is
    the submission while it waits or has expired unconfirmed ({} once confirmed), `language`
    the one its emails are in."""

    kind: str
    state: str
    data: Mapping[str, Any]
    language: str


def hold(tx: Tx, *, kind: str, data: Mapping[str, Any]) -> Held:
    """Check what can be checked whoever owns the address, then hold the submission and mail
    the address its confirmation link; InvalidInput or Refused as the service would refuse."""
    _CHECKS[kind](tx, data=data)
    address = services.email_address(data)
    tx.session.execute(
        delete(PendingSubmission).where(
            PendingSubmission.email == address,
            PendingSubmission.kind == kind,
            PendingSubmission.expires_at <= tx.now,
        )
    )
    waiting = select(PendingSubmission.id).where(
        PendingSubmission.email == address,
        PendingSubmission.kind == kind,
        PendingSubmission.waiting.is_(True),
    )
    if tx.session.scalar(waiting) is not None:
        return Held(address, sent=False)
    language = str(data.get("language") or tx.settings.language)
    try:
        with tx.session.begin_nested():
            token = links.issue(
                tx.session,
                links.token_row(
                    tx.settings, action=LINK_ACTIONS[kind], now=tx.now, valid_for=VALID_FOR
                ),
            )
            tx.session.flush()
            held = PendingSubmission(
                kind=kind,
                email=address,
                language=language,
                data=dict(data),
                created_at=tx.now,
                expires_at=token.expires_at,
                token_id=token.id,
                waiting=True,
            )
            tx.session.add(held)
            tx.session.flush()
    except IntegrityError:  # another web process held one for this address at the same moment
        return Held(address, sent=False)
    # To the address alone: no name, since the name was typed by whoever submitted.
    outbox.queue(
        tx.session,
        outbox.row(
            tx.settings,
            # Written with the submission it confirms, so it needs no key of its own to be sent
            # once; random, since the key is shown to coordinators and the token id is secret.
            key=f"confirm:{kind}:{uuid.uuid4().hex}",
            template=f"{kind}_confirm",
            to=(address, ""),
            language=language,
            now=tx.now,
            token_id=token.id,
        ),
    )
    return Held(address, sent=True)


def look_up(tx: Tx, *, link: str) -> Waiting | None:
    """What a confirmation link stands for, changing nothing; None for any other text."""
    token = links.find(tx.session, tx.settings, link)
    if token is None or token.action not in KIND_OF_ACTION:
        return None
    held = tx.session.scalar(
        select(PendingSubmission).where(PendingSubmission.token_id == token.id)
    )
    if token.used_at is not None:
        state = "confirmed"
    elif held is None or token.expires_at <= tx.now:
        state = "expired"
    else:
        state = "waiting"
    data = held.data if held is not None and state != "confirmed" else {}
    language = held.language if held is not None else tx.settings.language
    return Waiting(KIND_OF_ACTION[token.action], state, data, language)


def confirm(tx: Tx, *, link: str) -> Case:
    """The case the held submission becomes as its address's owner confirms it, a known
    person's stored details kept. Refused when the link no longer works, or as the service
    refuses; the caller's rollback then leaves the link unspent."""
    token = links.redeem(tx.session, tx.settings, link, now=tx.now)
    held = tx.session.scalar(
        select(PendingSubmission).where(PendingSubmission.token_id == token.id)
    )
    if held is None or token.action not in KIND_OF_ACTION:
        raise Refused("this link is not valid", rule="link_invalid")
    case = _SUBMITS[held.kind](tx, data=held.data, keep_stored=True)
    # The case holds it now: a second copy of the question would outlive its retention.
    held.confirmed_at, held.waiting, held.data = tx.now, None, {}
    return case


def delete_expired(tx: Tx) -> int:
    """Delete the held submissions whose links have expired; returns how many."""
    expired = PendingSubmission.expires_at <= tx.now
    count = tx.session.scalar(select(func.count()).select_from(PendingSubmission).where(expired))
    tx.session.execute(delete(PendingSubmission).where(expired))
    return count or 0
