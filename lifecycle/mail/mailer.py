"""Compose an outbox row into the MIME message that goes over SMTP.

multipart/alternative: text/plain, text/html and, for interviews and meetings, the
text/calendar invitation whose `method` parameter equals its METHOD property. The email
package writes it (EmailMessage with an EmailPolicy like `policy.SMTP`: CRLF lines, 7-bit
parts, RFC 2047 encoded words); the header classes below stand in where Python 3.11's
folding would write a name, subject or URL that reads back otherwise (tests/test_mime.py
holds every case), and the policy remembers the headers every message repeats.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Sequence
from datetime import datetime
from email.charset import BASE64, Charset
from email.header import Header
from email.headerregistry import (
    Address,
    BaseHeader,
    HeaderRegistry,
    UniqueAddressHeader,
    UnstructuredHeader,
)
from email.message import EmailMessage, MIMEPart
from email.policy import EmailPolicy, Policy
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from lifecycle.config import Settings
from lifecycle.mail import calendar, emails
from lifecycle.store.models import (
    ActionToken,
    Agreement,
    Application,
    AuditEvent,
    Case,
    MentorProfile,
    OutboxMessage,
    Person,
    Relation,
)

# Each header class names BaseHeader too, which the registry would add: typeshed knows the
# registry's classes only as mixins, and types AddressHeader's init apart from BaseHeader's.


class _Unfolded(UnstructuredHeader, BaseHeader):
    """A header written as it is, on one line. List-Unsubscribe's <URL> (RFC 2369) has no
    space to fold at, and the email package would wrap it in encoded words, which no mail
    program reads as a URL. The message's Message-ID and multipart Content-Type are ours,
    short and ASCII, and different in every message: parsing and folding them by their
    grammar cost a fifth of composing, and nothing reads them but the generator, which
    reads the boundary from the text."""

    def fold(self, *, policy: Policy) -> str:
        if not self.isascii():
            raise ValueError(f"the {self.name} header must be ASCII")
        return f"{self.name}: {self}{policy.linesep}"


class _OneLineAddress(UniqueAddressHeader, BaseHeader):  # type: ignore[misc]  # see above
    """From and To on one line of up to 998 characters, a name that is not ASCII in one
    encoded word. Folded at 78, Python 3.11's email package drops the quotes around a long
    name with a comma in it (it then reads as two addresses), and splits a long word into
    encoded words that its own parser reads with a space between them (CPython gh-128110).
    RFC 2047 asks for words of at most 75 characters; mail programs read longer ones."""

    def fold(self, *, policy: Policy) -> str:
        return super().fold(policy=policy.clone(max_line_length=998))


# Base64 words: weighing quoted-printable against them, character by character, would cost
# more than the rest of the subject.
_BASE64 = Charset("utf-8")
_BASE64.header_encoding = BASE64


class _Subject(UnstructuredHeader, BaseHeader):
    """ASCII on one line as it is; other text in RFC 2047 words from the email package's
    encoder (email.header), each word holding its spaces. The policy's own folding (Python
    3.11) loses or doubles a space where it breaks a line next to an encoded word."""

    def fold(self, *, policy: Policy) -> str:
        line = f"{self.name}: {self}"
        if self.isascii() and len(line) <= 998:
            return f"{line}{policy.linesep}"
        words = Header(str(self), _BASE64, policy.max_line_length, header_name=self.name)
        return f"{self.name}: {words.encode(linesep=policy.linesep)}{policy.linesep}"


class _Headers(HeaderRegistry):
    """The registry with each header's class made once: HeaderRegistry makes a new class
    for every header of every message, a tenth of composing one."""

    @functools.cache  # noqa: B019 - one registry, kept for the process's life
    def __getitem__(self, name: str) -> type[BaseHeader]:
        return super().__getitem__(name)


_HEADERS = _Headers()
_HEADERS.map_to_type("subject", _Subject)
_HEADERS.map_to_type("list-unsubscribe", _Unfolded)
_HEADERS.map_to_type("from", _OneLineAddress)
_HEADERS.map_to_type("to", _OneLineAddress)


class _Policy(EmailPolicy):
    """The email policy, remembering the headers it has parsed and folded.

    Most of a message's headers are the same in every message (MIME-Version, each part's
    Content-Type and encoding, From, Auto-Submitted), and parsing and folding them again was
    over half of composing one: 1.1 ms a message, where the delivery worker's whole budget
    at a relay's pace is about 2. A header's parse depends only on its name and text, and
    its folding only on its class, name and text, so these are the keys.
    """

    def clone(self, **changes: Any) -> _Policy:
        # The generator clones the policy for every part, with the line ending it already
        # has: a new policy would remember nothing.
        if all(getattr(self, name) == value for name, value in changes.items()):
            return self
        return super().clone(**changes)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one policy, kept for the process's life
    def _parsed(self, name: str, value: str) -> tuple[str, str]:
        return super().header_store_parse(name, value)

    def header_store_parse(self, name: str, value: object) -> tuple[str, str]:
        if type(value) is str:  # a header object or a date is taken as it is, uncached
            return self._parsed(name, value)
        return super().header_store_parse(name, value)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - as above
    def _folded(self, kind: type, name: str, value: str) -> bytes:
        return super().fold_binary(name, value)

    def fold_binary(self, name: str, value: str) -> bytes:
        if hasattr(value, "name"):  # a header object: equal text, equal class, equal folding
            return self._folded(type(value), name, value)
        return super().fold_binary(name, value)


# The worker sends the bytes as they are, without BODY=8BITMIME, so every part is 7-bit.
POLICY = _Policy(linesep="\r\n", cte_type="7bit", header_factory=_HEADERS)


def compose(session: Session, settings: Settings, message: OutboxMessage) -> bytes:
    """The message as it will be sent, rendered from the database now."""
    context = emails.context_for(session, settings, message)
    rendered = emails.render_all(
        settings.templates_dir,
        message.template,
        message.language,
        context,
        base_url=settings.base_url,
    )
    invitation = None
    if message.refs.get("calendar"):
        method = message.refs.get("method", "REQUEST")
        ics = _invitation(session, settings, message, method=method, summary=rendered.subject)
        invitation = (method, ics)
    return build(
        sender=(settings.programme_name, settings.from_address),
        recipient=(message.to_name, message.to_email),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        message_id=message.message_id,
        date=message.created_at,
        unsubscribe=context["unsubscribe_link"] if message.bulk else None,
        invitation=invitation,
    )


def build(
    *,
    sender: tuple[str, str],
    recipient: tuple[str, str],
    subject: str,
    text: str,
    html: str,
    message_id: str,
    date: datetime,
    unsubscribe: str | None = None,
    invitation: tuple[str, str] | None = None,
) -> bytes:
    """The message's bytes from its parts: (name, address) pairs, the invitation as
    (method, iCalendar text). Names and the subject are one line of single-spaced words."""
    mail: MIMEPart = EmailMessage(policy=POLICY)  # typed as what its parts are
    for header, (name, address) in (("From", sender), ("To", recipient)):
        given = Address(display_name=_words(header, name), addr_spec=address)
        mail[header] = str(given)
        _as_written(header, given.display_name, mail[header].addresses)
    words = _words("Subject", subject)
    mail["Subject"] = words
    _as_written("Subject", words, [str(mail["Subject"])])
    mail["Message-ID"] = _Unfolded("Message-ID", message_id)
    mail["Date"] = date
    mail["Auto-Submitted"] = "auto-generated"
    if unsubscribe is not None:
        mail["List-Unsubscribe"] = f"<{unsubscribe}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail["MIME-Version"] = "1.0"
    # The boundary given here, not drawn by the generator: it compiles a pattern for every
    # boundary it draws, to look for it in the parts, and then rewrites the header. 128
    # random bits after "=_": base64 cannot produce them, nobody typing a part can guess them.
    boundary = f"=_{secrets.token_hex(16)}"
    mail["Content-Type"] = _Unfolded(
        "Content-Type", f'multipart/alternative; boundary="{boundary}"'
    )
    parts: list[tuple[str, str, dict[str, str]]] = [(text, "plain", {}), (html, "html", {})]
    if invitation is not None:
        method, ics = invitation
        parts.append((ics, "calendar", {"method": method}))
    for content, subtype, params in parts:
        part = MIMEPart(policy=POLICY)  # not an EmailMessage: that adds MIME-Version to it
        # Base64 for text that is not ASCII: quoted-printable, which the email package would
        # choose for mostly-ASCII text, costs more than the rest of composing.
        cte = None if content.isascii() else "base64"
        part.set_content(content, subtype=subtype, params=params, cte=cte)
        mail.attach(part)
    return mail.as_bytes()


def _words(header: str, value: str) -> str:
    # Refused here, so no name or subject can ever inject a header.
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in the {header} header")
    # A header carries words: folding and parsing do not keep leading or repeated spaces.
    return " ".join(value.split())


def _as_written(header: str, given: str, read: Sequence[object]) -> None:
    """Refuse a header the email package reads otherwise than it was given.

    It takes a header as RFC 5322 text, so an encoded word spelt out in a name or subject is
    decoded, and Python 3.11.7's generator writes a line break decoded from one as it is
    (CVE-2024-6923): a name `=?utf-8?q?x=0D=0ABcc:...?=` would add a header.
    """
    shown = [getattr(item, "display_name", item) for item in read]
    if shown != [given]:
        raise ValueError(f"the {header} header would not read as written")


def preload(session: Session, messages: Sequence[OutboxMessage]) -> list[object]:
    """Load what composing a batch of messages reads, in a few queries; the caller holds it
    for the batch.

    The session's identity map keeps objects only weakly: without these references each
    message would read its case, people and token again.
    """
    case_ids = {m.case_id for m in messages if m.case_id}
    cases = session.scalars(
        select(Case)
        .where(Case.id.in_(case_ids))
        .options(
            selectinload(Case.application)
            .selectinload(Application.person)
            .selectinload(Person.profile)
            .selectinload(MentorProfile.credentials),
            selectinload(Case.application).selectinload(Application.votes),
            selectinload(Case.relation).selectinload(Relation.mentor),
            selectinload(Case.relation).selectinload(Relation.mentee),
            selectinload(Case.relation).selectinload(Relation.meetings),
            selectinload(Case.relation)
            .selectinload(Relation.agreements)
            .selectinload(Agreement.signatures),
        )
    ).all()
    tokens = session.scalars(
        select(ActionToken).where(ActionToken.id.in_({m.link_token_id for m in messages}))
    ).all()
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.id.in_({m.event_id for m in messages}))
    ).all()
    people = session.scalars(
        select(Person).where(Person.id.in_({m.to_person_id for m in messages}))
    ).all()
    return [*cases, *tokens, *events, *people]


def _invitation(
    session: Session, settings: Settings, message: OutboxMessage, *, method: str, summary: str
) -> str:
    domain = settings.from_address.rpartition("@")[2]
    organizer = (settings.programme_name, settings.from_address)
    sequence = int(message.refs.get("sequence", 0))
    case = session.get(Case, message.case_id)
    assert case is not None, "an invitation belongs to a case"
    relation = case.relation
    if relation is not None:
        meeting = next(m for m in relation.meetings if m.id == message.refs["meeting_id"])
        return calendar.invitation(
            method=method,
            uid=f"meeting-{meeting.id}@{domain}",
            sequence=sequence,
            starts_at=meeting.starts_at,
            summary=summary,
            location=meeting.place,
            organizer=organizer,
            attendees=[(p.name, p.email) for p in (relation.mentor, relation.mentee)],
            stamp=message.created_at,
        )
    application = case.application
    assert application is not None and application.interview_at is not None
    panel = [seat.member for seat in application.votes if seat.vote != "recuse"]
    return calendar.invitation(
        method=method,
        uid=f"interview-{application.id}@{domain}",
        sequence=sequence,
        starts_at=application.interview_at,
        summary=summary,
        location=application.interview_place or "",
        organizer=organizer,
        attendees=[(p.name, p.email) for p in (application.person, *panel)],
        stamp=message.created_at,
    )
