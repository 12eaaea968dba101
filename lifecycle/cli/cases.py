"""Cases: submitting a mentor application or a mentoring request from a JSON file, and listing,
showing and advancing cases."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lifecycle.bootstrap import App
from lifecycle.cases import queries, services
from lifecycle.cli.subcommands import Commands, add_command, add_group
from lifecycle.errors import InvalidInput
from lifecycle.workflows import engine


def _read_json(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput("--file", f"{path} does not exist") from None
    except json.JSONDecodeError as error:
        raise InvalidInput("--file", f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise InvalidInput("--file", f"{path} must hold one JSON object")
    return data


def cmd_application_submit(app: App, args: argparse.Namespace) -> dict[str, Any]:
    data = _read_json(args.file)
    with app.unit() as tx:
        case = services.submit_application(tx, data=data, actor_email=args.actor)
        return {"id": case.ref, "state": case.state}


def cmd_request_submit(app: App, args: argparse.Namespace) -> dict[str, Any]:
    data = _read_json(args.file)
    with app.unit() as tx:
        case = services.submit_request(tx, data=data, actor_email=args.actor)
        return {"id": case.ref, "state": case.state}


def cmd_case_list(app: App, args: argparse.Namespace) -> list[dict[str, Any]]:
    with app.read() as tx:
        return queries.list_cases(tx, workflow=args.workflow, state=args.state)


def cmd_case_show(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.read() as tx:
        return queries.show_case(tx, args.id, role=args.role)


def cmd_case_advance(app: App, args: argparse.Namespace) -> dict[str, Any]:
    try:
        values = json.loads(args.data) if args.data else {}
    except json.JSONDecodeError as error:
        raise InvalidInput("--data", f"not valid JSON: {error}") from None
    except RecursionError:  # no step's field is nested: the values are one level deep
        raise InvalidInput("--data", "nested too deeply to be a step's fields") from None
    if not isinstance(values, dict):
        raise InvalidInput("--data", "must be a JSON object")
    with app.unit() as tx:
        override = ""
        if args.reason:
            if _takes_reason(tx, args.id, args.trigger):
                values["reason"] = args.reason
            else:
                override = args.reason
        event = services.advance_case(
            tx,
            ref=args.id,
            trigger=args.trigger,
            actor_email=args.actor,
            values=values,
            override_reason=override,
            expected_version=args.expected_version,
        )
        return {
            "id": args.id.upper(),
            "trigger": event.trigger,
            "from": event.from_state,
            "to": event.to_state,
        }


def _takes_reason(tx: Any, ref: str, trigger: str) -> bool:
    case, _ = engine.load_case(tx, ref)
    return any(
        field.name == "reason"
        for spec in tx.workflows[case.workflow].transitions
        if spec.trigger == trigger
        for field in spec.fields
    )


def register(commands: Commands) -> None:
    application = add_group(commands, "application", "mentor applications")
    sub = add_command(application, "submit", cmd_application_submit, "submit a mentor application")
    sub.add_argument("--file", required=True, help="JSON file with the applicant and profile")
    sub.add_argument("--actor", help="email of the coordinator entering it on someone's behalf")

    request = add_group(commands, "request", "mentoring requests")
    sub = add_command(request, "submit", cmd_request_submit, "submit a mentoring request")
    sub.add_argument("--file", required=True, help="JSON file with mentee, mentor and question")
    sub.add_argument("--actor", help="email of the coordinator entering it on someone's behalf")

    case = add_group(commands, "case", "list, show and advance cases")
    sub = add_command(case, "list", cmd_case_list, "list cases, oldest in their state first")
    sub.add_argument("--state", help="only cases in this state")
    sub.add_argument("--workflow", choices=["mentor_application", "mentoring"])
    sub = add_command(case, "show", cmd_case_show, "show a case: state, next steps, timeline")
    sub.add_argument("id", help="case ID, like A-12 or M-7")
    sub.add_argument(
        "--role",
        default="coordinator",
        help="list the next steps this role may take (default: coordinator)",
    )
    sub = add_command(case, "advance", cmd_case_advance, "fire a trigger on a case")
    sub.add_argument("id", help="case ID, like A-12 or M-7")
    sub.add_argument("trigger", help="the step, e.g. begin_review")
    sub.add_argument("--actor", required=True, help="email of the person taking the step")
    sub.add_argument("--data", help='the step\'s fields as JSON, e.g. \'{"message": "..."}\'')
    sub.add_argument(
        "--reason",
        help="the step's reason, or the written reason for overriding a rule (e.g. mark_eligible)",
    )
    sub.add_argument(
        "--expected-version",
        type=int,
        help="refuse with a conflict unless the case is still at this version",
    )
