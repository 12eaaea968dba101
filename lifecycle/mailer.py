"""Compose an outbox row into the MIME message that goes over SMTP.

multipart/alternative: text/plain, text/html and, for interviews and meetings, the
text/calendar invitation whose `method` parameter equals its METHOD property.
"""

from __future__ import annotations

from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr

from sqlalchemy.orm import Session

from lifecycle import calendar, emails
from lifecycle.config import Settings
from lifecycle.models import Case, OutboxMessage


def compose(session: Session, settings: Settings, message: OutboxMessage) -> bytes:
    """The message as it will be sent, rendered from the database now."""
    context = emails.context_for(session, settings, message)
    rendered = emails.render_all(
        settings.templates_dir, message.template, message.language, context
    )
    mail = MIMEMultipart("alternative")
    _header(mail, "From", formataddr((settings.programme_name, settings.from_address), "utf-8"))
    _header(mail, "To", formataddr((message.to_name, message.to_email), "utf-8"))
    _header(mail, "Subject", rendered.subject)
    _header(mail, "Message-ID", message.message_id)
    _header(mail, "Date", format_datetime(message.created_at))
    _header(mail, "Auto-Submitted", "auto-generated")
    if message.bulk:
        _header(mail, "List-Unsubscribe", f"<{context['unsubscribe_link']}>")
        _header(mail, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    mail.attach(MIMEText(rendered.text, "plain", "utf-8"))
    mail.attach(MIMEText(rendered.html, "html", "utf-8"))
    if message.refs.get("calendar"):
        method = message.refs.get("method", "REQUEST")
        ics = MIMEText(
            _invitation(session, settings, message, method=method, summary=rendered.subject),
            "calendar",
            "utf-8",
        )
        ics.set_param("method", method)
        mail.attach(ics)
    return mail.as_bytes()


def _header(mail: MIMEMultipart, name: str, value: str) -> None:
    # The compat32 email API (five times faster than EmailMessage here) does not refuse
    # line breaks in header values: we do, so no name or subject can inject a header.
    if "\r" in value or "\n" in value:
        raise ValueError(f"line break in the {name} header")
    if value.isascii():
        mail[name] = value
    else:  # a Header object folds properly from the header's own first line
        mail[name] = Header(value, "utf-8", header_name=name)  # type: ignore[assignment]


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
