"""Email rendering: Jinja2 templates in email_templates/<language>/<name>.txt, one HTML layout.

Each template extends `_layout.txt` and fills the blocks `subject` and `body`. The HTML part
is the same text laid out by `email_templates/_layout.html` (escaped, links made clickable),
so every email has one wording in each language. Every template gets the same context keys
(see `sample_context`), empty where they do not apply, so StrictUndefined catches a
misspelt name and nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

from babel.dates import format_date, format_datetime
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from lifecycle.config import Settings
from lifecycle.directory.search import suitable_mentors
from lifecycle.store.models import (
    TOPIC_LABELS,
    ActionToken,
    Announcement,
    Application,
    AuditEvent,
    Case,
    IntakeRound,
    OutboxMessage,
    Person,
    Relation,
)
from lifecycle.workflows import links
from lifecycle.workflows.qualifications import evaluate

DATETIME_PATTERNS = {"et": "d. MMMM y 'kell' HH:mm", "en": "d MMMM y 'at' HH:mm"}
DATE_PATTERNS = {"et": "d. MMMM y", "en": "d MMMM y"}
URL = re.compile(r"(https?://[^\s<>\"]+)")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def environment(templates_dir: Path, language: str) -> Environment:
    return Environment(
        loader=FileSystemLoader(templates_dir / language),
        auto_reload=False,  # templates change with a deployment, not while it runs
        undefined=StrictUndefined,
        autoescape=False,  # plain text; the HTML layout escapes it
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def _environments(templates_dir: Path) -> dict[str, Environment]:
    html = Environment(
        loader=FileSystemLoader(templates_dir),
        auto_reload=False,
        undefined=StrictUndefined,
        autoescape=True,
    )
    return {
        "et": environment(templates_dir, "et"),
        "en": environment(templates_dir, "en"),
        "html": html,
    }


def render(env: Environment, name: str, context: dict[str, Any]) -> tuple[str, str]:
    """The (subject, plain-text body) of one email."""
    template = env.get_template(f"{name}.txt")
    # One context for both: building it is a good part of rendering a short email.
    shared = template.new_context(context)
    subject = "".join(template.blocks["subject"](shared)).strip()
    # One line whatever the template or the data hold: a subject cannot carry a header break.
    return " ".join(subject.split()), env.concat(template.root_render_func(shared))


LINK = '<a href="{0}" style="color:#2f6f5e;">{0}</a>'


def _html_paragraphs(text: str, base_url: str) -> list[Markup]:
    """Text → the HTML inside each paragraph: escaped, the service's URLs as links, line
    breaks kept. Any other URL — one a person typed, a meeting place — stays text: the
    association's address must not carry a stranger's link as its own.

    Built here rather than in the layout: looping over every piece in a template cost more
    than the rest of the HTML part.
    """
    paragraphs = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [
            "".join(
                LINK.format(escape(piece))
                if index % 2 and _ours(piece, base_url)
                else str(escape(piece))
                for index, piece in enumerate(URL.split(line))
            )
            for line in block.splitlines()
        ]
        paragraphs.append(Markup("<br>\n".join(lines)))
    return paragraphs


def _ours(url: str, base_url: str) -> bool:
    return url == base_url or url.startswith(base_url.rstrip("/") + "/")


def render_all(
    templates_dir: Path, name: str, language: str, context: dict[str, Any], *, base_url: str
) -> Rendered:
    """Subject, text and HTML of one email in one language."""
    envs = _environments(templates_dir)
    subject, text = render(envs[language], name, context)
    html = (
        envs["html"]
        .get_template("_layout.html")
        .render(lang=language, subject=subject, paragraphs=_html_paragraphs(text, base_url))
    )
    return Rendered(subject, text, html)


def when(moment: datetime | None, settings: Settings, language: str) -> str:
    if moment is None:
        return ""
    return format_datetime(
        moment, DATETIME_PATTERNS[language], tzinfo=settings.time_zone, locale=language
    )


def day(value: date | None, language: str) -> str:
    return format_date(value, DATE_PATTERNS[language], locale=language) if value else ""


def context_for(session: Session, settings: Settings, message: OutboxMessage) -> dict[str, Any]:
    """Everything the message's template may show, read from the database now."""
    lang = message.language
    context = sample_context_shape()
    context["programme"] = {"name": settings.programme_name, "from_address": settings.from_address}
    context["recipient"] = {"name": message.to_name, "role": ""}
    if message.link_token_id:
        token = session.get(ActionToken, message.link_token_id)
        assert token is not None
        # Bulk mail's one token is its unsubscribe link; other mail's is the action's.
        context["unsubscribe_link" if message.bulk else "link"] = links.url(token, settings)
    event = session.get(AuditEvent, message.event_id) if message.event_id else None
    if event is not None:
        context["comment"] = event.comment
    _bulk_context(session, settings, message, context)
    case = session.get(Case, message.case_id) if message.case_id else None
    if case is None:
        return context
    context["case"] = {"ref": case.ref, "state_label": ""}
    application, relation = case.application, case.relation
    if application is not None:
        _application_context(session, settings, message, application, context)
    if relation is not None:
        _relation_context(session, settings, message, relation, context)
        party = context["recipient"]["role"] in ("mentor", "mentee")
        if event is not None and event.party_text and party:
            # A party's own words reach the other party (and them), never anyone else.
            context["comment"] = " — ".join(filter(None, (event.comment, event.party_text)))
    person = session.get(Person, message.to_person_id) if message.to_person_id else None
    if person is not None and person.role == "coordinator":
        # Coordinators act in the console, behind their login: their link needs no token.
        context["recipient"]["role"] = "coordinator"
        context["link"] = f"{settings.base_url}/console/cases/{case.ref}"
    context["topic"] = TOPIC_LABELS[relation.topic][lang] if relation else ""
    return context


def _bulk_context(
    session: Session, settings: Settings, message: OutboxMessage, context: dict[str, Any]
) -> None:
    """Round, announcement and digest emails carry their content in the row's refs."""
    lang = message.language
    if round_id := message.refs.get("round_id"):
        context["link"] = f"{settings.base_url}/apply"
        round_ = session.get(IntakeRound, round_id)
        assert round_ is not None
        context["round"] = {
            "name": round_.name,
            "opens": when(round_.opens_at, settings, lang),
            "closes": when(round_.closes_at, settings, lang),
            "counts": [
                {"state_label": item["label"][lang], "count": item["count"]}
                for item in message.refs.get("counts", [])
            ],
        }
    if announcement_id := message.refs.get("announcement_id"):
        announcement = session.get(Announcement, announcement_id)
        assert announcement is not None
        context["announcement"] = {
            "subject": getattr(announcement, f"subject_{lang}"),
            "body": getattr(announcement, f"body_{lang}"),
        }
    if "queue" in message.refs:
        context["queue"] = [
            {
                "id": item["id"],
                "action": item["action"],
                "since": day(
                    datetime.fromisoformat(item["since"]).astimezone(settings.time_zone).date(),
                    lang,
                ),
                "overdue_since": day(
                    datetime.fromisoformat(item["overdue_since"])
                    .astimezone(settings.time_zone)
                    .date(),
                    lang,
                )
                if item["overdue_since"]
                else "",
            }
            for item in message.refs["queue"]
        ]
        context["link"] = f"{settings.base_url}/console"


def _application_context(
    session: Session,
    settings: Settings,
    message: OutboxMessage,
    application: Application,
    context: dict[str, Any],
) -> None:
    lang = message.language
    context["applicant_name"] = application.person.name
    context["recipient"]["role"] = (
        "applicant" if message.to_person_id == application.person_id else "committee"
    )
    context["interview"] = {
        "at": when(application.interview_at, settings, lang),
        "place": application.interview_place or "",
        "updated": message.refs.get("sequence", 0) > 0,
    }
    profile = application.person.profile
    if profile is not None:
        failed = [
            r.rule
            for r in evaluate(profile, today=message.created_at.date())
            if r.required and not r.passed
        ]
        context["only_certificate_missing"] = failed == ["credential"]


def _relation_context(
    session: Session,
    settings: Settings,
    message: OutboxMessage,
    relation: Relation,
    context: dict[str, Any],
) -> None:
    lang = message.language
    context["mentor_name"] = relation.mentor.name
    context["mentee_name"] = relation.mentee.name
    context["recipient"]["role"] = (
        "mentor"
        if message.to_person_id == relation.mentor_id
        else "mentee"
        if message.to_person_id == relation.mentee_id
        else ""
    )
    meeting = next(
        (m for m in relation.meetings if m.id == message.refs.get("meeting_id")),
        next((m for m in relation.meetings if m.cancelled_at is None), None),
    )
    if meeting is not None:
        context["meeting"] = {
            "at": when(meeting.starts_at, settings, lang),
            "place": meeting.place,
            "updated": message.refs.get("sequence", 0) > 0,
        }
    if relation.agreements:
        current = relation.agreements[-1]
        context["agreement"] = {"version": current.version, "ends_on": day(current.ends_on, lang)}
    if message.template in ("request_declined", "request_expired"):
        context["alternatives"] = [
            {"name": person.name, "link": f"{settings.base_url}/mentors/{person.id}"}
            for person in suitable_mentors(
                session,
                topic=relation.topic,
                organisation=relation.mentee_organisation,
                is_manager=relation.mentee_is_manager,
                exclude={relation.mentor_id},
            )
        ]


def sample_context_shape() -> dict[str, Any]:
    """Every key a template may use, empty."""
    return {
        "programme": {"name": "", "from_address": ""},
        "recipient": {"name": "", "role": ""},
        "case": {"ref": "", "state_label": ""},
        "comment": "",
        "link": "",
        "unsubscribe_link": "",
        "applicant_name": "",
        "mentor_name": "",
        "mentee_name": "",
        "topic": "",
        "interview": {"at": "", "place": "", "updated": False},
        "meeting": {"at": "", "place": "", "updated": False},
        "agreement": {"version": 0, "ends_on": ""},
        "alternatives": [],
        "only_certificate_missing": False,
        "round": {"name": "", "opens": "", "closes": "", "counts": []},
        "announcement": {"subject": "", "body": ""},
        "queue": [],
    }


def sample_context() -> dict[str, Any]:
    """Every key a template may use, with realistic values (tests render each template)."""
    return {
        "programme": {"name": "Mentorlus", "from_address": "mentorlus@example.org"},
        "recipient": {"name": "Mari Maasikas", "role": "mentee"},
        "case": {"ref": "M-7", "state_label": "Pöördumine saadetud"},
        "comment": "Palun lisage diplomi koopia.",
        "link": "https://mentorlus.example.org/a/abc123",
        "unsubscribe_link": "https://mentorlus.example.org/l/def456",
        "applicant_name": "Kalle Kask",
        "mentor_name": "Tiina Tamm",
        "mentee_name": "Mari Maasikas",
        "topic": "karjäärieesmärgid ja eneseareng",
        "interview": {"at": "12.03.2027 14:00", "place": "Tallinn, Pärnu mnt 10", "updated": True},
        "meeting": {"at": "15.03.2027 10:00", "place": "videokõne", "updated": True},
        "agreement": {"version": 2, "ends_on": "30.06.2027"},
        "alternatives": [{"name": "Peeter Pärn", "link": "https://mentorlus.example.org/m/3"}],
        "only_certificate_missing": True,
        "round": {
            "name": "Kevadvoor 2027",
            "opens": "1. märts 2027 kell 09:00",
            "closes": "31. märts 2027 kell 09:00",
            "counts": [{"state_label": "Esitatud", "count": 4}],
        },
        "announcement": {"subject": "Koostööseminar 12. mail", "body": "Kutsume kõiki mentoreid."},
        "queue": [
            {
                "id": "A-12",
                "action": "Alusta avalduse läbivaatamist",
                "since": "1. märts 2027",
                "overdue_since": "8. märts 2027",
            },
        ],
    }
