"""Named guards: each returns the reason it refuses a step, or None when the step may go on."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select

from lifecycle.store.models import (
    Application,
    Case,
    MentorProfile,
    Person,
    Relation,
)
from lifecycle.workflows.capacity import taken_places
from lifecycle.workflows.qualifications import can_mentor_managers, evaluate
from lifecycle.workflows.rounds import current_round, next_round
from lifecycle.workflows.spec import Context, Guard


def _application(ctx: Context) -> Application:
    assert isinstance(ctx.subject, Application)
    return ctx.subject


def _relation(ctx: Context) -> Relation:
    assert isinstance(ctx.subject, Relation)
    return ctx.subject


# Built once and run on the connection: a request checks them, and through the ORM each
# would cost several times its query.
_LISTING_STATE = (
    select(Case.state)
    .join(Application, Application.case_id == Case.id)
    .where(Application.person_id == bindparam("person_id"))
    .order_by(Application.id.desc())
    .limit(1)
)
_OPEN_REQUESTS = (
    select(func.count())
    .select_from(Relation)
    .join(Case, Relation.case_id == Case.id)
    .where(
        Relation.mentee_id == bindparam("mentee_id"),
        Case.state == "requested",
        Relation.id != bindparam("relation_id"),
    )
)


def mentor_listing_state(ctx: Context, person_id: int) -> str | None:
    """The state of the person's newest application: listed, paused, retired, ..."""
    return ctx.session.connection().scalar(_LISTING_STATE, {"person_id": person_id})


def _profile(person: Person) -> MentorProfile | None:
    # Through the relationship, so the guards of one step share one load.
    return person.profile


# -- mentor application ---------------------------------------------------------------------


def intake_round_open(ctx: Context) -> str | None:
    if "coordinator" in ctx.roles:
        return None  # a coordinator may enter an application on someone's behalf at any time
    if current_round(ctx.session, ctx.now) is not None:
        return None
    upcoming = next_round(ctx.session, ctx.now)
    if upcoming is None:
        return "applications are accepted only during an intake round, and none is scheduled"
    zone = ctx.settings.time_zone
    opens = upcoming.opens_at.astimezone(zone)
    closes = upcoming.closes_at.astimezone(zone)
    return (
        "applications are accepted only during an intake round; the next one is open "
        f"{opens:%d.%m.%Y} to {closes:%d.%m.%Y}"
    )


def qualifications_met(ctx: Context) -> str | None:
    application = _application(ctx)
    profile = _profile(application.person)
    if profile is None:
        return "the applicant has no profile with qualifications"
    failed = [
        result.explanation
        for result in evaluate(profile, today=ctx.now.astimezone(ctx.settings.time_zone).date())
        if result.required and not result.passed
    ]
    unverified = [item.kind for item in application.evidence if item.verified_at is None]
    if unverified:
        failed.append(f"evidence not yet verified: {', '.join(unverified)}")
    return "qualification rules not met: " + "; ".join(failed) if failed else None


def interview_scheduled(ctx: Context) -> str | None:
    application = _application(ctx)
    if application.interview_at is None or not application.votes:
        return "no interview has been scheduled with the committee"
    return None


def interview_held(ctx: Context) -> str | None:
    refusal = interview_scheduled(ctx)
    if refusal:
        return refusal
    application = _application(ctx)
    assert application.interview_at is not None
    if application.interview_at > ctx.now:
        zone = ctx.settings.time_zone
        return (
            "the committee decides after the interview, which is at "
            f"{application.interview_at.astimezone(zone):%d.%m.%Y %H:%M}"
        )
    return None


def votes_open(ctx: Context) -> str | None:
    # The decision (approve or decline) moves the case out of the interview, and the votes it
    # was taken on must stay as they were.
    if ctx.case.state == "interview":
        return None
    return "the committee's decision has been taken: the votes are final"


def _tally(ctx: Context) -> tuple[int, int, int]:
    votes = [seat.vote for seat in _application(ctx).votes]
    return votes.count("approve"), votes.count("decline"), votes.count(None)


def committee_majority_approves(ctx: Context) -> str | None:
    approve, decline, pending = _tally(ctx)
    # Approved only when the votes still missing could not change the outcome.
    if approve > decline + pending:
        return None
    return (
        f"the committee has not approved: {approve} for, {decline} against, "
        f"{pending} not yet voted (a majority of those voting is needed)"
    )


def committee_majority_declines(ctx: Context) -> str | None:
    approve, decline, pending = _tally(ctx)
    # A tie is no majority for approval, so it declines.
    if approve + decline > 0 and approve + pending <= decline:
        return None
    return (
        f"the committee has not declined: {approve} for, {decline} against, "
        f"{pending} not yet voted (a majority of those voting is needed)"
    )


# -- mentoring relation -----------------------------------------------------------------------


def mentor_listed(ctx: Context) -> str | None:
    relation = _relation(ctx)
    state = mentor_listing_state(ctx, relation.mentor_id)
    if state == "listed":
        return None
    if state == "paused":
        return "this mentor is not taking requests at the moment (paused) — choose another"
    return "this person is not a listed mentor — choose a mentor from the directory"


def mentor_has_capacity(ctx: Context) -> str | None:
    relation = _relation(ctx)
    profile = _profile(relation.mentor)
    capacity = profile.capacity if profile else 0
    taken = taken_places(ctx.session, [relation.mentor_id]).get(relation.mentor_id, 0)
    if taken < capacity:
        return None
    return f"this mentor has no free place (all {capacity} taken) — choose another"


def different_organisation(ctx: Context) -> str | None:
    relation = _relation(ctx)
    mentor_org = relation.mentor.organisation.strip().casefold()
    if mentor_org and mentor_org == relation.mentee_organisation.strip().casefold():
        return "this mentor works in your organisation — mentoring is horizontal, choose another"
    return None


def mentor_holds_topic(ctx: Context) -> str | None:
    relation = _relation(ctx)
    profile = _profile(relation.mentor)
    if profile and relation.topic in profile.topics:
        return None
    return f"this mentor does not mentor on the topic '{relation.topic}' — choose another"


def master_for_manager_mentee(ctx: Context) -> str | None:
    relation = _relation(ctx)
    if not relation.mentee_is_manager:
        return None
    profile = _profile(relation.mentor)
    if profile and can_mentor_managers(profile):
        return None
    return "mentoring a manager needs a mentor with a master's degree — choose another"


def one_open_request(ctx: Context) -> str | None:
    relation = _relation(ctx)
    limit = ctx.settings.max_open_requests
    open_requests = ctx.session.connection().scalar(
        _OPEN_REQUESTS, {"mentee_id": relation.mentee_id, "relation_id": relation.id or 0}
    )
    if (open_requests or 0) < limit:
        return None
    return (
        f"you already have {open_requests} open request(s); wait for the answer "
        f"(at most {limit} at a time)"
    )


def first_meeting_held(ctx: Context) -> str | None:
    relation = _relation(ctx)
    if any(m.starts_at <= ctx.now and m.cancelled_at is None for m in relation.meetings):
        return None
    return "the first meeting has not taken place yet"


def both_go_on(ctx: Context) -> str | None:
    relation = _relation(ctx)
    waiting = [
        party
        for party, at in (
            ("mentor", relation.mentor_goes_on_at),
            ("mentee", relation.mentee_goes_on_at),
        )
        if at is None
    ]
    return f"waiting for the {' and '.join(waiting)} to confirm" if waiting else None


def agreement_signed_by_both(ctx: Context) -> str | None:
    relation = _relation(ctx)
    if not relation.agreements:
        return "no agreement has been drafted yet"
    current = relation.agreements[-1]
    waiting = [party for party in ("mentor", "mentee") if not current.signed_by(party)]
    if waiting:
        return f"agreement version {current.version} awaits the {' and '.join(waiting)}'s signature"
    return None


GUARDS: dict[str, Guard] = {
    guard.__name__: guard
    for guard in (
        intake_round_open,
        qualifications_met,
        interview_scheduled,
        interview_held,
        votes_open,
        committee_majority_approves,
        committee_majority_declines,
        mentor_listed,
        mentor_has_capacity,
        different_organisation,
        mentor_holds_topic,
        master_for_manager_mentee,
        one_open_request,
        first_meeting_held,
        both_go_on,
        agreement_signed_by_both,
    )
}
