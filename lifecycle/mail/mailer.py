"""Compose an outbox row into the MIME message that goes over SMTP.

multipart/alternative: text/plain, text/html and, for interviews and meetings, the
text/calendar invitation whose `method` parameter equals its METHOD property.
"""

from __future__ import annotations

import base64
import secrets
from email.utils import format_datetime, formataddr

from sqlalchemy.orm import Session

from lifecycle.config import Settings
from lifecycle.mail import calendar, emails
from lifecycle.store.models import Case, OutboxMessage


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
    headers = [
        ("From", formataddr((settings.programme_name, settings.from_address), "utf-8")),
        ("To", formataddr((message.to_name, message.to_email), "utf-8")),
        ("Subject", rendered.subject),
        ("Message-ID", message.message_id),
        ("Date", format_datetime(message.created_at)),
        ("Auto-Submitted", "auto-generated"),
    ]
    if message.bulk:
        headers.append(("List-Unsubscribe", f"<{context['unsubscribe_link']}>"))
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    parts = [("plain", rendered.text, ""), ("html", rendered.html, "")]
    if message.refs.get("calendar"):
        method = message.refs.get("method", "REQUEST")
        ics = _invitation(session, settings, message, method=method, summary=rendered.subject)
        parts.append(("calendar", ics, f"; method={method}"))
    return _multipart(headers, parts)


def _multipart(headers: list[tuple[str, str]], parts: list[tuple[str, str, str]]) -> bytes:
    """A multipart/alternative message with base64 utf-8 text parts.

    Built directly: the email package's generator costs more than rendering and sending
    together (it compiles a pattern per message to check its boundary). Base64 lines never
    contain '_', so the boundary cannot occur in a part.
    """
    boundary = f"=_mentorlus_{secrets.token_hex(12)}"
    lines = [f"{name}: {_header_value(name, value)}" for name, value in headers]
    lines += [
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
    ]
    for subtype, text, params in parts:
        body = base64.encodebytes(text.encode("utf-8")).decode("ascii").rstrip("\n")
        lines += [
            f"--{boundary}",
            f'Content-Type: text/{subtype}; charset="utf-8"{params}',
            "Content-Transfer-Encoding: base64",
            "",
            body.replace("\n", "\r\n"),
        ]
    lines += [f"--{boundary}--", ""]
    return "\r\n".join(lines).encode("ascii")


def _header_value(name: str, value: str) -> str:
    # Refused here, so no name or subject can ever inject a header.
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in the {name} header")
    if value.isascii():
        return value
    return _encoded_words(value)


def _encoded_words(value: str) -> str:
    """RFC 2047 base64 words of at most 40 bytes, one per folded line of at most 78 characters.

    Written out here: email.header.Header weighs quoted-printable against base64 character
    by character, which cost more than the rest of composing a message.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > 40:  # a word holds whole characters only
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    words.append("".join(chunk))
    return "\r\n ".join(
        f"=?utf-8?b?{base64.b64encode(word.encode('utf-8')).decode('ascii')}?=" for word in words
    )


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
