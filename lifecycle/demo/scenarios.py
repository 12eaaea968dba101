"""Stories told through the real service path: used by the demo data, the tests and the benchmark.

Every step goes through `services`, in its own transaction, at the time a ManualClock shows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from lifecycle.bootstrap import App
from lifecycle.cases import services
from lifecycle.store.models import Person

STATE_PATHS: dict[str, list[str]] = {
    # The shortest way from the start to each state, as steps known to `step_towards`.
    "submitted": [],
    "eligibility": ["begin_review"],
    "awaiting_info": ["begin_review", "request_info"],
    "interview": ["begin_review", "verify_all", "mark_eligible"],
    "listed": ["begin_review", "verify_all", "mark_eligible", "interview_and_votes", "approve"],
    "paused": [
        "begin_review",
        "verify_all",
        "mark_eligible",
        "interview_and_votes",
        "approve",
        "pause",
    ],
    "retired": [
        "begin_review",
        "verify_all",
        "mark_eligible",
        "interview_and_votes",
        "approve",
        "retire",
    ],
    "rejected": ["begin_review", "mark_ineligible"],
    "withdrawn": ["withdraw"],
}


class ManualClock:
    """A clock that moves only when told: tests and the demo move time instead of sleeping."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def add_staff(app: App, *, name: str, email: str, role: str, language: str = "et") -> None:
    """A coordinator or committee member (they log in; they do not apply)."""
    with app.unit() as tx:
        person = tx.session.scalar(select(Person).where(Person.email == email))
        if person is None:
            tx.session.add(
                Person(
                    name=name,
                    email=email,
                    role=role,
                    language=language,
                    organisation="ESTA",
                    region="",
                    created_at=tx.now,
                )
            )


def applicant(email: str, name: str, **overrides: Any) -> dict[str, Any]:
    """Application data of a fully qualified applicant; overrides change any field."""
    data: dict[str, Any] = {
        "name": name,
        "email": email,
        "language": "et",
        "organisation": "Tartu Linnavalitsus",
        "region": "Tartumaa",
        "degree_level": "master",
        "degree_field": "sotsiaaltöö",
        "degree_in_social_work": True,
        "years_in_social_field": 12,
        "topics": ["career", "change_at_work"],
        "background": "Lastekaitse ja perede nõustamine, 12 aastat.",
        "regions": ["Tartumaa"],
        "languages": ["et", "en"],
        "formats": ["in_person", "online"],
        "capacity": 2,
        "fee_note": "Tasu kokkuleppel.",
        "credentials": [
            {
                "kind": "supervisor",
                "issuer": "Eesti Supervisiooni ja Coachingu Ühing",
                "year": 2018,
                "valid_until": None,
            }
        ],
    }
    data.update(overrides)
    return data


def mentee(email: str, name: str, mentor: str, **overrides: Any) -> dict[str, Any]:
    """Request data of a mentee who may ask this mentor; overrides change any field."""
    data: dict[str, Any] = {
        "name": name,
        "email": email,
        "language": "et",
        "organisation": "Pärnu Sotsiaalkeskus",
        "region": "Pärnumaa",
        "mentor": mentor,
        "topic": "career",
        "question": "Kuidas kujundada oma karjääri järgmised viis aastat?",
        "is_manager": False,
    }
    data.update(overrides)
    return data


def step(app: App, ref: str, trigger: str, actor: str | None, **values: Any) -> None:
    """Fire one trigger in its own transaction."""
    with app.unit() as tx:
        services.advance_case(tx, ref=ref, trigger=trigger, actor_email=actor, values=values)


def submit_application(app: App, data: dict[str, Any], *, actor: str | None = None) -> str:
    with app.unit() as tx:
        return services.submit_application(tx, data=data, actor_email=actor).ref


def submit_request(app: App, data: dict[str, Any], *, actor: str | None = None) -> str:
    with app.unit() as tx:
        return services.submit_request(tx, data=data, actor_email=actor).ref


def bring_application(
    app: App,
    clock: ManualClock,
    ref: str,
    state: str,
    *,
    coordinator: str,
    committee: list[str],
    applicant_email: str,
) -> None:
    """Move a submitted application to `state` through the real steps, a day or so apart."""
    for name in STATE_PATHS[state]:
        clock.advance(days=1)
        if name == "verify_all":
            for kind in ("degree", "experience", "credential"):
                step(app, ref, "verify_evidence", coordinator, kind=kind)
        elif name == "interview_and_votes":
            interview_at = clock.now + timedelta(days=5)
            step(
                app,
                ref,
                "schedule_interview",
                coordinator,
                interview_at=interview_at,
                place="Tallinn, Lastekodu 12",
                committee=committee,
            )
            clock.now = interview_at + timedelta(hours=2)
            for member in committee:
                step(app, ref, "record_vote", member, vote="approve", notes="")
        elif name == "request_info":
            step(app, ref, name, coordinator, message="Palun saatke diplomi koopia.")
        elif name == "mark_ineligible":
            step(app, ref, name, coordinator, reason="Sotsiaaltöö kraad puudub.")
        elif name in ("pause", "retire", "withdraw"):
            step(app, ref, name, applicant_email)
        else:
            step(app, ref, name, coordinator)


RELATION_PATHS: dict[str, list[str]] = {
    "requested": [],
    "first_meeting": ["accept"],
    "agreement": ["accept", "first_meeting", "proceed_both"],
    "active": ["accept", "first_meeting", "proceed_both", "draft", "sign_both"],
    "reframed": ["accept", "first_meeting", "proceed_both", "draft", "sign_both", "reframe"],
    "closed": ["accept", "first_meeting", "proceed_both", "draft", "sign_both", "close"],
    "declined": ["decline"],
    "expired": ["expire"],
}


def bring_relation(
    app: App, clock: ManualClock, ref: str, state: str, *, mentor: str, mentee_email: str
) -> None:
    """Move a requested relation to `state` through the real steps."""
    both = (mentor, mentee_email)
    for name in RELATION_PATHS[state]:
        clock.advance(days=1)
        if name == "first_meeting":
            step(
                app,
                ref,
                "schedule_meeting",
                mentor,
                starts_at=clock.now + timedelta(days=3),
                place="videokõne",
            )
            clock.advance(days=4)
        elif name == "proceed_both":
            for party in both:
                step(app, ref, "proceed", party)
        elif name == "draft":
            start = clock.now.date()
            step(
                app,
                ref,
                "draft_agreement",
                mentee_email,
                goal="Selge karjääriplaan",
                starts_on=start,
                ends_on=start + timedelta(days=180),
                meeting_rhythm="kord kuus",
                fee="tasuta",
                confidentiality=True,
            )
        elif name == "sign_both":
            for party in both:
                step(app, ref, "sign", party)
        elif name == "reframe":
            step(app, ref, "reframe", mentee_email, question="Kuidas juhtida meeskonna muudatusi?")
        elif name == "close":
            step(app, ref, "close", mentee_email, outcome="completed")
        elif name == "expire":
            step(app, ref, "expire", None)
        else:
            step(app, ref, name, mentor)
