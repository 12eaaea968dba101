"""iCalendar invitations (RFC 5545, sent as iMIP, RFC 6047) for interviews and meetings.

One event keeps one UID for its whole life; each change raises SEQUENCE, so calendar
programs update or remove the entry they already have instead of adding another.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from icalendar import Calendar, Event, vCalAddress, vText

DURATION = timedelta(hours=1)


def invitation(
    *,
    method: str,
    uid: str,
    sequence: int,
    starts_at: datetime,
    summary: str,
    location: str,
    organizer: tuple[str, str],
    attendees: list[tuple[str, str]],
    stamp: datetime,
) -> str:
    """A VCALENDAR with one VEVENT; method is REQUEST (new or changed) or CANCEL."""
    calendar = Calendar()
    calendar.add("prodid", "-//Mentorlus//mentorlus//ET")
    calendar.add("version", "2.0")
    calendar.add("method", method)
    event = Event()
    event.add("uid", uid)
    event.add("sequence", sequence)
    event.add("dtstamp", stamp)
    event.add("dtstart", starts_at)
    event.add("dtend", starts_at + DURATION)
    event.add("summary", summary)
    event.add("location", location)
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    name, email = organizer
    organizer_address = vCalAddress(f"mailto:{email}")
    organizer_address.params["cn"] = vText(name)
    event["organizer"] = organizer_address
    for name, email in attendees:
        attendee = vCalAddress(f"mailto:{email}")
        attendee.params["cn"] = vText(name)
        attendee.params["role"] = vText("REQ-PARTICIPANT")
        event.add("attendee", attendee, encode=False)
    calendar.add_component(event)
    ics: bytes = calendar.to_ical()
    return ics.decode("utf-8")
