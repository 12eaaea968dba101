"""Acting on one case through an email link, as the person it was sent to (/act).

Following the link (lifecycle.web.links) granted this browser one action on the case; the page
shows that party what the step needs — the concrete question, the agreement and its versions
are shown to the two parties only (SPEC §6) — and advances the case as them. The first step
taken spends the link (it works once); the browser that spent it may go on for a while. Every
request checks the grant against the link's token: an expired or spent link answers 410 and
offers a fresh one, a link gone with its person's erasure 404.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from lifecycle.cases import services
from lifecycle.errors import Conflict, InvalidInput, NotFound, Refused
from lifecycle.mail.emails import day, when
from lifecycle.store.models import (
    ActionToken,
    Application,
    AuditEvent,
    Case,
    Feedback,
    Person,
    Relation,
)
from lifecycle.web import auth
from lifecycle.web.links import ACTION_TRIGGERS, private, problem_page
from lifecycle.web.pages import (
    core,
    field_errors,
    language,
    page,
    redirect,
    refusal_text,
)
from lifecycle.workflows import links
from lifecycle.workflows.engine import Tx, load_case, roles_on

router = APIRouter(include_in_schema=False)

PARTIES = frozenset({"mentor", "mentee", "applicant"})
AGREEMENT_FIELDS = ("question", "goal", "starts_on", "ends_on", "meeting_rhythm", "fee")


def _link_text(request: Request, token_id: str) -> str:
    with core(request).read() as tx:
        token = tx.session.get(ActionToken, token_id)
        return links.text(token, tx.settings) if token else ""


def _forbidden(request: Request) -> Response:
    return private(page(request, "link_problem.html", status_code=403, rule="not_granted"))


# Why a link no longer lets its browser act (lifecycle.workflows.links).
LINK_RULES = ("link_invalid", "link_used", "link_expired")


def _grant(request: Request, ref: str, action: str) -> tuple[int, str] | Response:
    """The person and the link this browser was granted this case's action by, while the link
    still holds; otherwise the page that says why not."""
    grant = auth.granted(request, ref, action)
    if grant is None or action not in ACTION_TRIGGERS:
        return _forbidden(request)
    person_id, token_id = grant
    try:
        with core(request).read() as tx:
            links.check_grant(
                tx.session,
                token_id,
                person_id=person_id,
                now=tx.now,
                spent_here=auth.spent_here(request, token_id),
                grace=tx.settings.link_grace,
            )
    except Refused as error:
        return problem_page(request, _link_text(request, token_id), error.rule)
    return grant


@router.get("/act/{ref}/{action}", response_class=HTMLResponse)
def act_page(request: Request, ref: str, action: str, done: str = "") -> Response:
    grant = _grant(request, ref, action)
    if isinstance(grant, Response):
        return grant
    person_id, _ = grant
    notice = done if done in ACTION_TRIGGERS[action] else None
    return _act_page(request, ref, action, person_id, notice=notice)


@router.post("/act/{ref}/{action}", response_class=HTMLResponse)
async def act(request: Request, ref: str, action: str) -> Response:
    """Take one step as the person the link was sent to; refusals keep what was typed."""
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    grant = _grant(request, ref, action)
    if isinstance(grant, Response):
        return grant
    trigger = str(form.get("trigger", ""))
    if trigger not in ACTION_TRIGGERS[action]:
        return _forbidden(request)
    person_id, token_id = grant
    typed = {
        key[len("f_") :]: str(value)
        for key, value in form.items()
        if key.startswith("f_") and str(value).strip() != ""
    }
    if trigger == "draft_agreement":  # an unticked box is a "no", not a missing field
        typed["confidentiality"] = "true" if typed.get("confidentiality") else "false"
    version = str(form.get("version", ""))
    failed: dict[str, Any] = {"failed_step": trigger, "typed": typed}
    try:
        with core(request).unit() as tx:
            person = tx.session.get(Person, person_id)
            assert person is not None
            spent_here = auth.spent_here(request, token_id)
            links.spend(
                tx.session,
                token_id,
                now=tx.now,
                spent_here=spent_here,
                grace=tx.settings.link_grace,
            )
            services.advance_case(
                tx,
                ref=ref,
                trigger=trigger,
                actor_email=person.email,
                values=typed,
                # isdigit() alone would take '²', which int() refuses
                expected_version=int(version) if version.isascii() and version.isdigit() else None,
            )
    except NotFound:
        return _forbidden(request)
    except Conflict as error:
        return _act_page(request, ref, action, person_id, 409, conflict=str(error), **failed)
    except Refused as error:
        if error.rule in LINK_RULES:  # spent in another browser, too late, or erased meanwhile
            return problem_page(request, _link_text(request, token_id), error.rule)
        refusal = {"reason": refusal_text(request, error), "rule": error.rule}
        return _act_page(request, ref, action, person_id, 422, refusal=refusal, **failed)
    except InvalidInput as error:
        errors = field_errors(request, error)
        return _act_page(request, ref, action, person_id, 422, errors=errors, **failed)
    if not spent_here:
        auth.mark_spent(request, token_id)
    return private(redirect(f"/act/{ref}/{action}?done={trigger}"))


def _act_page(
    request: Request,
    ref: str,
    action: str,
    person_id: int,
    status_code: int = 200,
    **more: Any,
) -> Response:
    lang = language(request)
    try:
        with core(request).read() as tx:
            view = _view(tx, ref, action, person_id, lang)
    except NotFound:
        view = None
    if view is None:
        return _forbidden(request)
    more.setdefault("typed", {})
    more.setdefault("errors", {})
    return private(
        page(request, "link_act.html", status_code=status_code, action=action, view=view, **more)
    )


def _view(tx: Tx, ref: str, action: str, person_id: int, lang: str) -> dict[str, Any] | None:
    """What this party sees on the case and the steps this link offers them now."""
    case, subject = load_case(tx, ref)
    person = tx.session.get(Person, person_id)
    roles = roles_on(subject, person) & PARTIES
    if person is None or not roles:
        return None  # only the parties see a case through a link
    workflow = tx.workflows[case.workflow]
    state = workflow.state(case.state)
    view: dict[str, Any] = {
        "ref": case.ref,
        "version": case.version,
        "state": case.state,
        "state_label": state.label[lang],
        "terminal": state.terminal,
        "me": person.name,
        "labels": {spec.trigger: spec.label[lang] for spec in workflow.transitions},
    }
    if isinstance(subject, Relation):
        view.update(_relation_view(tx, subject, person, lang))
    else:
        view.update(_application_view(tx, case, subject, lang))
    view["steps"] = [
        {
            "trigger": spec.trigger,
            "label": spec.label[lang],
            "fields": [
                {"name": f.name, "type": f.type, "required": f.required, "choices": f.choices}
                for f in spec.fields
            ],
        }
        for spec in workflow.triggers_for(case.state, roles)
        if spec.trigger in ACTION_TRIGGERS[action] and _offered(spec.trigger, view)
    ]
    return view


def _offered(trigger: str, view: dict[str, Any]) -> bool:
    """Hide a step this party has already taken or that has nothing to act on."""
    if trigger == "sign":
        return bool(view["agreements"]) and not view["agreements"][-1]["signed"][view["party"]]
    if trigger == "proceed":
        return not view["goes_on"][view["party"]]
    if trigger in ("move_meeting", "cancel_meeting"):
        return bool(view["planned"])
    if trigger == "give_feedback":
        return not view["feedback_given"]
    return True


def _relation_view(tx: Tx, relation: Relation, person: Person, lang: str) -> dict[str, Any]:
    settings = tx.settings
    party = "mentor" if relation.mentor_id == person.id else "mentee"
    meetings = [
        {
            "id": m.id,
            "at": when(m.starts_at, settings, lang),
            "place": m.place,
            "notes": m.notes,
            "cancelled": m.cancelled_at is not None,
            "planned": m.cancelled_at is None and m.starts_at > tx.now,
        }
        for m in relation.meetings
    ]
    agreements: list[dict[str, Any]] = []
    previous: dict[str, str] | None = None
    for version in relation.agreements:
        shown = {
            "question": version.question,
            "goal": version.goal,
            "starts_on": day(version.starts_on, lang),
            "ends_on": day(version.ends_on, lang),
            "meeting_rhythm": version.meeting_rhythm,
            "fee": version.fee,
        }
        changes = [
            {"field": name, "old": previous[name], "new": shown[name]}
            for name in AGREEMENT_FIELDS
            if previous is not None and previous[name] != shown[name]
        ]
        signed = {side: version.signed_by(side) for side in ("mentor", "mentee")}
        agreements.append(
            {
                "version": version.version,
                **shown,
                "drafted": when(version.drafted_at, settings, lang),
                "signed": signed,
                "changes": changes,
                "form": {
                    **{name: shown[name] for name in ("question", "goal", "meeting_rhythm")},
                    "fee": version.fee,
                    "starts_on": version.starts_on.isoformat(),
                    "ends_on": version.ends_on.isoformat(),
                    "confidentiality": "true",
                },
            }
        )
        previous = shown
    in_force = max((a["version"] for a in agreements if all(a["signed"].values())), default=None)
    feedback_given = tx.session.scalar(
        select(Feedback.id).where(
            Feedback.relation_id == relation.id, Feedback.person_id == person.id
        )
    )
    return {
        "kind": "relation",
        "party": party,
        "other": relation.mentee.name if party == "mentor" else relation.mentor.name,
        "mentor": relation.mentor.name,
        "mentee": relation.mentee.name,
        "mentee_organisation": relation.mentee_organisation,
        "mentee_is_manager": relation.mentee_is_manager,
        "topic": relation.topic,
        "question": relation.question,
        "outcome": relation.outcome,
        "goes_on": {
            "mentor": relation.mentor_goes_on_at is not None,
            "mentee": relation.mentee_goes_on_at is not None,
        },
        "meetings": meetings,
        "planned": [m for m in meetings if m["planned"]],
        "agreements": agreements,
        "in_force": in_force,
        "feedback_given": feedback_given is not None,
        "prefill": {
            "draft_agreement": agreements[-1]["form"]
            if agreements
            else {"question": relation.question, "confidentiality": "true"}
        },
    }


def _application_view(tx: Tx, case: Case, application: Application, lang: str) -> dict[str, Any]:
    """The applicant's own application: the coordinator's latest question, if any."""
    message = tx.session.scalar(
        select(AuditEvent.comment)
        .where(AuditEvent.case_id == case.id, AuditEvent.trigger == "request_info")
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    return {
        "kind": "application",
        "party": "applicant",
        "message": message or "",
        "submitted": when(application.submitted_at, tx.settings, lang),
        "prefill": {},
    }
