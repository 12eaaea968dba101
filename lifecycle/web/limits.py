"""Limits on the mail that anyone without a login can make the service send: confirmation links
for a request, an application or a subscription, and fresh links in place of used ones.

Each such email is counted under the address it goes to and under the client that asked for it,
in the database, so that every web process counts the same (as the login throttle does,
lifecycle/web/auth.py). Over either limit the email is not sent and the answer is 429, saying
how long to wait. A count never depends on whether the address belongs to anyone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from lifecycle.store.models import PublicMail
from lifecycle.web.pages import page

WINDOW = timedelta(hours=1)
# Enough for a person who asks again, or for a new link after using one; not for a stream.
PER_ADDRESS = 3
# Enough for an office behind one address; not for writing to strangers by the hundred.
PER_CLIENT = 30


@dataclass(frozen=True)
class MailKeys:
    """What an email sent at a stranger's asking is counted under."""

    address: str
    client: str


def keys(request: Request, address: str) -> MailKeys:
    """The address is one the service already checked or holds: storable text."""
    client = request.client.host if request.client else "?"
    return MailKeys(address=f"to:{address.strip().lower()}", client=f"client:{client}")


class Limited(Exception):
    """Too many emails to this address or from this client lately; try again after `wait`."""

    def __init__(self, wait: timedelta) -> None:
        super().__init__(wait)
        self.wait = wait

    @property
    def seconds(self) -> int:
        return max(1, math.ceil(self.wait.total_seconds()))


def spend(session: Session, keys: MailKeys, now: datetime) -> None:
    """Count one email about to be queued in this transaction; Limited (the caller rolls the
    email back) when the address or the client has had its share of the window."""
    since = now - WINDOW
    counted = (
        select(PublicMail.key, func.count(), func.min(PublicMail.at))
        .where(PublicMail.key.in_((keys.address, keys.client)), PublicMail.at > since)
        .group_by(PublicMail.key)
    )
    found = {key: (count, oldest) for key, count, oldest in session.execute(counted)}
    for key, limit in ((keys.address, PER_ADDRESS), (keys.client, PER_CLIENT)):
        count, oldest = found.get(key, (0, now))
        if count >= limit:
            raise Limited(oldest + WINDOW - now)
    session.execute(delete(PublicMail).where(PublicMail.at <= since))
    session.add_all(PublicMail(key=key, at=now) for key in (keys.address, keys.client))


def answer(request: Request, limited: Limited) -> Response:
    """429, in the reader's language, saying how long to wait (also in Retry-After)."""
    minutes = math.ceil(limited.seconds / 60)
    response = page(request, "limited.html", status_code=429, minutes=minutes)
    response.headers["Retry-After"] = str(limited.seconds)
    return response
