"""Pages behind email links: follow a link, then act on one case as the person it was sent to.

Following a link grants this browser one action on one case (auth.grant); the /act page
shows that party what the step needs — the concrete question, the agreement and its
versions are shown to the two parties only (SPEC §6) — and advances the case as them. The
first step taken spends the link (it works once); opening it spends nothing, since mail
scanners open links before their readers do, and the browser that spent it may go on.
Subscription links confirm with a button, or unsubscribe in one click (RFC 8058). A used or
expired link says so and can send its owner a fresh one by email.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from lifecycle.cases import services
from lifecycle.errors import Conflict, InvalidInput, NotFound, Refused
from lifecycle.mail import bulk
from lifecycle.mail.emails import day, when
from lifecycle.store.models import (
    ActionToken,
    Application,
    AuditEvent,
    Case,
    Feedback,
    Person,
    Relation,
    Subscriber,
)
from lifecycle.web import auth
from lifecycle.web.pages import core, language, page, redirect
from lifecycle.workflows import links, outbox
from lifecycle.workflows.engine import Tx, load_case, roles_on

router = APIRouter(include_in_schema=False)

# What each link lets its reader do: the steps its page offers, and nothing else.
ACTION_TRIGGERS: dict[str, tuple[str, ...]] = {
    "provide_info": ("provide_info",),
    "availability": ("pause", "resume", "retire"),
    "respond": ("accept", "decline"),
    "schedule_meeting": ("schedule_meeting", "move_meeting", "cancel_meeting"),
    "go_on": ("proceed", "discontinue"),
    "agreement": ("draft_agreement", "sign", "reframe"),
    "log_meeting": ("log_meeting", "reframe", "close"),
    "close": ("close",),
    "feedback": ("give_feedback",),
}
PARTIES = frozenset({"mentor", "mentee", "applicant"})
AGREEMENT_FIELDS = ("question", "goal", "starts_on", "ends_on", "meeting_rhythm", "fee")
# A link's token must not leak through the Referer header, a shared cache or a search engine.
PRIVATE = {"Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Robots-Tag": "noindex"}


def _private(response: Response) -> Response:
    response.headers.update(PRIVATE)
    return response


def _case_ref(tx: Tx, token: ActionToken) -> str | None:
    case = tx.session.get(Case, token.case_id) if token.case_id is not None else None
    return case.ref if case is not None else None


# -- following a link ---------------------------------------------------------------------------


@router.get("/l/{text}", response_class=HTMLResponse)
def follow(request: Request, text: str) -> Response:
    """Open a link: a case action grants this browser its page; a subscription link shows its
    button. Nothing is spent here (see the module's docstring)."""
    try:
        with core(request).read() as tx:
            token = links.find(tx.session, tx.settings, text)
            if token is None:
                raise Refused("this link is not valid", rule="link_invalid")
            action, token_id = token.action, token.id
            if token.used_at is not None and action in SUBSCRIPTION_DONE:
                return _done(request, SUBSCRIPTION_DONE[action])
            if token.used_at is not None and not auth.spent_here(request, token_id):
                raise Refused("this link has already been used", rule="link_used")
            if token.used_at is None and token.expires_at <= tx.now:
                raise Refused("this link has expired", rule="link_expired")
            if action in SUBSCRIPTION_DONE:
                return _private(page(request, f"link_{action}.html", text=text))
            ref = _case_ref(tx, token)
            person = tx.session.get(Person, token.person_id) if token.person_id else None
            if ref is None or person is None or action not in ACTION_TRIGGERS:
                raise Refused("this link is not valid", rule="link_invalid")
            person_id, person_language = person.id, person.language
    except Refused as error:
        return _problem(request, text, error.rule)
    auth.grant(request, person_id=person_id, case_ref=ref, action=action, token_id=token_id)
    request.session.setdefault("lang", person_language)
    return _private(redirect(f"/act/{ref}/{action}"))


# What a used subscription link says when it is opened again.
SUBSCRIPTION_DONE = {
    "unsubscribe": "unsubscribed_already",
    "confirm_subscription": "confirmed_already",
}


@router.post("/l/{text}", response_class=HTMLResponse)
def subscription_button(request: Request, text: str) -> Response:
    """Confirm or unsubscribe: the page's button, or the mail client's one-click unsubscribe
    (RFC 8058: List-Unsubscribe=One-Click, with no cookie or CSRF token; the link is the key).

    Only a subscription link may be posted to; every other link is opened, not posted.
    """
    with core(request).read() as tx:
        token = links.find(tx.session, tx.settings, text)
        action, used = (token.action, token.used_at) if token else (None, None)
    if action is None:
        return _problem(request, text, "link_invalid")
    if action not in SUBSCRIPTION_DONE:
        return _private(page(request, "link_problem.html", status_code=405, rule="post_refused"))
    if used is not None:
        return _done(request, SUBSCRIPTION_DONE[action])
    try:
        with core(request).unit() as tx:
            if action == "unsubscribe":
                bulk.unsubscribe(tx, link=text)
            else:
                bulk.confirm_subscription(tx, link=text)
    except Refused as error:
        return _problem(request, text, error.rule)
    return _done(request, "unsubscribed" if action == "unsubscribe" else "confirmed")


@router.post("/l/{text}/fresh", response_class=HTMLResponse)
def send_fresh_link(request: Request, text: str, csrf: Annotated[str, Form()] = "") -> Response:
    """Email the owner of a used or expired link a new one (once per old link)."""
    auth.check_csrf(request, csrf)
    with core(request).unit() as tx:
        token = links.find(tx.session, tx.settings, text)
        if token is None:
            outcome = "invalid"
        elif token.used_at is None and token.expires_at > tx.now:
            outcome = "still_valid"
        elif outbox.exists(tx.session, f"fresh_link:{token.id}"):
            outcome = "fresh_already"
        else:
            _queue_fresh_link(tx, token)
            outcome = "fresh_sent"
    if outcome == "invalid":
        return _problem(request, text, "link_invalid")
    if outcome == "still_valid":
        return _private(redirect(f"/l/{text}"))
    return _done(request, outcome)


def _queue_fresh_link(tx: Tx, old: ActionToken) -> None:
    """A new token for the same reader, case and action, in an email to the reader."""
    key = f"fresh_link:{old.id}"
    if old.person_id is not None:
        person = tx.session.get(Person, old.person_id)
        assert person is not None
        outbox.add(
            tx.session,
            tx.settings,
            key=key,
            template="fresh_link",
            person=person,
            now=tx.now,
            case_id=old.case_id,
            link=old.action,
        )
        return
    subscriber = tx.session.get(Subscriber, old.subscriber_id)
    assert subscriber is not None
    token = links.issue(
        tx.session,
        links.token_row(
            tx.settings,
            action=old.action,
            now=tx.now,
            subscriber_id=subscriber.id,
            valid_for=outbox.UNSUBSCRIBE_VALID if old.action == "unsubscribe" else None,
        ),
    )
    outbox.queue(
        tx.session,
        outbox.row(
            tx.settings,
            key=key,
            template="fresh_link",
            to=(subscriber.email, ""),
            language=subscriber.language,
            now=tx.now,
            token_id=token.id,
        ),
    )


def _problem(request: Request, text: str, rule: str) -> Response:
    """Why a link does not work; a used or expired one offers a fresh link by email."""
    offer_fresh = False
    if rule in ("link_used", "link_expired"):
        with core(request).read() as tx:
            offer_fresh = links.find(tx.session, tx.settings, text) is not None
    status = 404 if rule == "link_invalid" else 410
    return _private(
        page(
            request,
            "link_problem.html",
            status_code=status,
            rule=rule,
            text=text,
            offer_fresh=offer_fresh,
        )
    )


def _link_text(request: Request, token_id: str) -> str:
    with core(request).read() as tx:
        token = tx.session.get(ActionToken, token_id)
        return links.text(token, tx.settings) if token else ""


def _done(request: Request, outcome: str) -> Response:
    return _private(page(request, "link_done.html", outcome=outcome))


# -- acting on a case -----------------------------------------------------------------------------


def _forbidden(request: Request) -> Response:
    return _private(page(request, "link_problem.html", status_code=403, rule="not_granted"))


@router.get("/act/{ref}/{action}", response_class=HTMLResponse)
def act_page(request: Request, ref: str, action: str, done: str = "") -> Response:
    grant = auth.granted(request, ref, action)
    if grant is None or action not in ACTION_TRIGGERS:
        return _forbidden(request)
    person_id, _ = grant
    notice = done if done in ACTION_TRIGGERS[action] else None
    return _act_page(request, ref, action, person_id, notice=notice)


@router.post("/act/{ref}/{action}", response_class=HTMLResponse)
async def act(request: Request, ref: str, action: str) -> Response:
    """Take one step as the person the link was sent to; refusals keep what was typed."""
    form = await request.form()
    auth.check_csrf(request, str(form.get("csrf", "")))
    grant = auth.granted(request, ref, action)
    trigger = str(form.get("trigger", ""))
    if grant is None or trigger not in ACTION_TRIGGERS.get(action, ()):
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
            links.spend(tx.session, token_id, now=tx.now, spent_here=spent_here)
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
        if error.rule in ("link_used", "link_expired"):  # spent in another browser, or too late
            return _problem(request, _link_text(request, token_id), error.rule)
        refusal = {"reason": error.reason, "rule": error.rule}
        return _act_page(request, ref, action, person_id, 422, refusal=refusal, **failed)
    except InvalidInput as error:
        errors = {error.field: error.message}
        return _act_page(request, ref, action, person_id, 422, errors=errors, **failed)
    if not spent_here:
        auth.mark_spent(request, token_id)
    return _private(redirect(f"/act/{ref}/{action}?done={trigger}"))


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
    return _private(
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
