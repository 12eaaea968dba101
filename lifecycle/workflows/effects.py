"""Named effects: what a step records besides the state, run inside the step's transaction.

They write through `lifecycle.rows`: directly, with the loaded objects kept up to date.

An effect may refuse (raise Refused); the transaction then leaves everything as it was.
"""

from __future__ import annotations

from sqlalchemy import select

from lifecycle.errors import Refused
from lifecycle.store import rows
from lifecycle.store.models import (
    Agreement,
    Application,
    CommitteeVote,
    Feedback,
    Meeting,
    Person,
    Relation,
    Signature,
)
from lifecycle.workflows.guards import interview_held, votes_open
from lifecycle.workflows.spec import Context, Effect


def _application(ctx: Context) -> Application:
    assert isinstance(ctx.subject, Application)
    return ctx.subject


def _relation(ctx: Context) -> Relation:
    assert isinstance(ctx.subject, Relation)
    return ctx.subject


def _party(ctx: Context) -> str:
    """Which side of the relation the actor speaks for."""
    for party in ("mentor", "mentee"):
        if party in ctx.roles:
            return party
    raise Refused("only the mentor or the mentee can do this", rule="role")


def _actor_id(ctx: Context) -> int | None:
    return ctx.actor.id if ctx.actor else None


# -- mentor application -----------------------------------------------------------------------


def verify_evidence(ctx: Context) -> None:
    kind = ctx.values["kind"]
    items = [item for item in _application(ctx).evidence if item.kind == kind]
    if not items:
        raise Refused(f"the application declares no {kind} evidence", rule="evidence")
    for item in items:
        rows.change(ctx.session, item, verified_by_id=_actor_id(ctx), verified_at=ctx.now)


def schedule_interview(ctx: Context) -> None:
    application = _application(ctx)
    # Recusals do not lock the panel: if everyone steps aside, a new panel is needed.
    if any(seat.vote in ("approve", "decline") for seat in application.votes):
        raise Refused(
            "the committee has already started voting; the interview cannot move",
            rule="interview_scheduled",
        )
    emails = list(dict.fromkeys(ctx.values["committee"]))
    size = ctx.settings.committee_size
    if len(emails) != size:
        raise Refused(
            f"the evaluation committee has {size} members; {len(emails)} given",
            rule="committee_size",
        )
    members = ctx.session.scalars(select(Person).where(Person.email.in_(emails))).all()
    found = {member.email: member for member in members}
    for email in emails:
        member = found.get(email)
        if member is None or member.role != "committee":
            raise Refused(
                f"{email} is not a member of the evaluation committee", rule="committee_member"
            )
    for seat in list(application.votes):
        rows.remove(ctx.session, seat, of=(application, "votes"))
    for email in emails:
        seat = CommitteeVote(application_id=application.id, member_id=found[email].id)
        rows.add(ctx.session, seat, to=(application, "votes"))
    rows.change(
        ctx.session,
        application,
        interview_sequence=application.interview_sequence
        + (application.interview_at is not None),  # a moved interview is an update
        interview_at=ctx.values["interview_at"],
        interview_place=ctx.values["place"],
    )
    ctx.refs.update(sequence=application.interview_sequence)


def record_vote(ctx: Context) -> None:
    application = _application(ctx)
    vote = ctx.values["vote"]
    seat = next((s for s in application.votes if ctx.actor and s.member_id == ctx.actor.id), None)
    if seat is None:
        raise Refused("only a member of this interview's committee can vote", rule="role")
    # Effects run before the machine's guards: nothing is written for a refused vote.
    refusal = votes_open(ctx)
    if refusal:
        raise Refused(refusal, rule="votes_open")
    if vote != "recuse":
        refusal = interview_held(ctx)
        if refusal:
            raise Refused(refusal, rule="interview_held")
    # The seat holds the latest vote; the audit event keeps the one it replaces.
    ctx.detail["previous"] = seat.vote
    rows.change(ctx.session, seat, vote=vote, notes=ctx.values.get("notes", ""), voted_at=ctx.now)


# -- mentoring relation -----------------------------------------------------------------------


def add_meeting(ctx: Context) -> None:
    relation = _relation(ctx)
    meeting = Meeting(
        relation_id=relation.id,
        starts_at=ctx.values["starts_at"],
        place=ctx.values.get("place", ""),
        notes=ctx.values.get("notes", ""),
        sequence=0,
        cancelled_at=None,
    )
    rows.add(ctx.session, meeting, to=(relation, "meetings"))
    ctx.refs.update(meeting_id=meeting.id, sequence=0)


def _planned_meeting(ctx: Context) -> Meeting:
    meeting = next((m for m in _relation(ctx).meetings if m.id == ctx.values["meeting"]), None)
    if meeting is None or meeting.cancelled_at is not None:
        raise Refused("no such planned meeting in this mentoring", rule="meeting")
    if meeting.starts_at <= ctx.now:
        raise Refused("the meeting has already taken place", rule="meeting")
    return meeting


def move_meeting(ctx: Context) -> None:
    meeting = _planned_meeting(ctx)
    rows.change(
        ctx.session,
        meeting,
        starts_at=ctx.values["starts_at"],
        place=ctx.values["place"],
        sequence=meeting.sequence + 1,
    )
    ctx.refs.update(meeting_id=meeting.id, sequence=meeting.sequence)


def cancel_meeting(ctx: Context) -> None:
    meeting = _planned_meeting(ctx)
    rows.change(ctx.session, meeting, cancelled_at=ctx.now, sequence=meeting.sequence + 1)
    ctx.refs.update(meeting_id=meeting.id, sequence=meeting.sequence, method="CANCEL")


def record_goes_on(ctx: Context) -> None:
    rows.change(ctx.session, _relation(ctx), **{f"{_party(ctx)}_goes_on_at": ctx.now})


def draft_agreement(ctx: Context) -> None:
    """Write the draft: the newest version, which is never the one in force in these states."""
    relation = _relation(ctx)
    values = ctx.values
    if values["ends_on"] <= values["starts_on"]:
        raise Refused("the agreement must end after it starts", rule="time_frame")
    if not values["confidentiality"]:
        raise Refused("the agreement must guarantee confidentiality", rule="confidentiality")
    draft = relation.agreements[-1] if relation.agreements else None
    terms = {
        "question": values.get("question") or (draft.question if draft else relation.question),
        "goal": values["goal"],
        "starts_on": values["starts_on"],
        "ends_on": values["ends_on"],
        "meeting_rhythm": values["meeting_rhythm"],
        "fee": values.get("fee", ""),
        "confidentiality": True,
        "drafted_at": ctx.now,
    }
    if draft is None:
        draft = Agreement(relation_id=relation.id, version=1, **terms)
        rows.add(ctx.session, draft, to=(relation, "agreements"))
        return
    if all(getattr(draft, name) == value for name, value in terms.items() if name != "drafted_at"):
        # Saving it again would take away a signature given to these very terms.
        raise Refused("the draft is unchanged: sign it as it is", rule="draft_unchanged")
    # A changed draft must be signed again by both.
    for signature in list(draft.signatures):
        rows.remove(ctx.session, signature, of=(draft, "signatures"))
    rows.change(ctx.session, draft, **terms)


def sign_agreement(ctx: Context) -> None:
    relation = _relation(ctx)
    party = _party(ctx)
    if not relation.agreements:
        raise Refused("no agreement has been drafted yet", rule="agreement_drafted")
    current = relation.agreements[-1]
    if current.signed_by(party):
        raise Refused(
            f"the {party} has already signed version {current.version}", rule="already_signed"
        )
    signature = Signature(agreement_id=current.id, party=party, signed_at=ctx.now)
    rows.add(ctx.session, signature, to=(current, "signatures"))


def reframe_agreement(ctx: Context) -> None:
    relation = _relation(ctx)
    previous = relation.agreements[-1]
    reframed = Agreement(
        relation_id=relation.id,
        version=previous.version + 1,
        question=ctx.values["question"],
        goal=ctx.values.get("goal") or previous.goal,
        starts_on=previous.starts_on,
        ends_on=previous.ends_on,
        meeting_rhythm=previous.meeting_rhythm,
        fee=previous.fee,
        confidentiality=True,
        drafted_at=ctx.now,
    )
    rows.add(ctx.session, reframed, to=(relation, "agreements"))


def record_outcome(ctx: Context) -> None:
    rows.change(ctx.session, _relation(ctx), outcome=ctx.values["outcome"])


def record_not_continued(ctx: Context) -> None:
    rows.change(ctx.session, _relation(ctx), outcome="not_continued")


def record_cancelled(ctx: Context) -> None:
    rows.change(ctx.session, _relation(ctx), outcome="cancelled")


def record_feedback(ctx: Context) -> None:
    relation = _relation(ctx)
    _party(ctx)
    assert ctx.actor is not None
    given = ctx.session.scalar(
        select(Feedback.id).where(
            Feedback.relation_id == relation.id, Feedback.person_id == ctx.actor.id
        )
    )
    if given is not None:
        raise Refused("you have already given feedback on this mentoring", rule="feedback_given")
    feedback = Feedback(
        relation_id=relation.id,
        person_id=ctx.actor.id,
        rating=ctx.values["rating"],  # from 1 to 5, as the workflow file declares it
        comment=ctx.values.get("comment", ""),
        given_at=ctx.now,
    )
    rows.add(ctx.session, feedback)


EFFECTS: dict[str, Effect] = {
    effect.__name__: effect
    for effect in (
        verify_evidence,
        schedule_interview,
        record_vote,
        add_meeting,
        move_meeting,
        cancel_meeting,
        record_goes_on,
        draft_agreement,
        sign_agreement,
        reframe_agreement,
        record_outcome,
        record_not_continued,
        record_cancelled,
        record_feedback,
    )
}
