"""Compose an outbox row into the MIME message that goes over SMTP.

multipart/alternative: text/plain, text/html and, for interviews and meetings, the
text/calendar invitation whose `method` parameter equals its METHOD property.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr

from sqlalchemy import select
from sqlalchemy.orm import Session

from lifecycle import calendar, emails
from lifecycle.config import Settings
from lifecycle.models import Application, OutboxMessage, Relation


def compose(session: Session, settings: Settings, message: OutboxMessage) -> EmailMessage:
    """The message as it will be sent, rendered from the database now."""
    context = emails.context_for(session, settings, message)
    rendered = emails.render_all(
        settings.templates_dir, message.template, message.language, context
    )
    mail = EmailMessage(policy=SMTP)
    # EmailMessage refuses CR/LF in any header value: names and subjects cannot inject headers.
    mail["From"] = formataddr((settings.programme_name, settings.from_address))
    mail["To"] = formataddr((message.to_name, message.to_email))
    mail["Subject"] = rendered.subject
    mail["Message-ID"] = message.message_id
    mail["Date"] = format_datetime(message.created_at)
    mail["Auto-Submitted"] = "auto-generated"
    if message.bulk:
        mail["List-Unsubscribe"] = f"<{context['unsubscribe_link']}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    mail.set_content(rendered.text)
    mail.add_alternative(rendered.html, subtype="html")
    if message.refs.get("calendar"):
        method = message.refs.get("method", "REQUEST")
        ics = _invitation(session, settings, message, method=method, summary=rendered.subject)
        mail.add_alternative(ics, subtype="calendar", params={"method": method})
    return mail


def _invitation(
    session: Session, settings: Settings, message: OutboxMessage, *, method: str, summary: str
) -> str:
    domain = settings.from_address.rpartition("@")[2]
    organizer = (settings.programme_name, settings.from_address)
    sequence = int(message.refs.get("sequence", 0))
    relation = session.scalar(select(Relation).where(Relation.case_id == message.case_id))
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
    application = session.scalar(select(Application).where(Application.case_id == message.case_id))
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
