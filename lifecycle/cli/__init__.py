"""The `mentorlus` command for operators: exit 0 on success, 1 with a one-line reason otherwise."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import getpass
import json
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from lifecycle import bootstrap, logs
from lifecycle.bootstrap import App
from lifecycle.cases import queries, services
from lifecycle.cases.accounts import add_user
from lifecycle.config import ConfigError, load_settings
from lifecycle.demo import story as demo
from lifecycle.errors import Conflict, InvalidInput, MentorlusError, NotFound, Refused
from lifecycle.mail import bulk, delivery, mailer, sink
from lifecycle.privacy import backup
from lifecycle.privacy import people as privacy
from lifecycle.reports import disclosure
from lifecycle.reports import tables as reports
from lifecycle.schedule import intake, scheduler, upcoming
from lifecycle.store import db
from lifecycle.store.models import OutboxMessage
from lifecycle.workflows import engine
from lifecycle.workflows.spec import WorkflowError


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


def cmd_init(app: App, args: argparse.Namespace) -> dict[str, Any]:
    db.migrate(app.engine)
    return {"database": app.settings.database_url, "status": "up to date"}


def cmd_check(app: App, args: argparse.Namespace) -> dict[str, Any]:
    # Building the app already loaded and validated every workflow file.
    return {
        "workflows": {
            name: {"states": len(w.states), "transitions": len(w.transitions), "file": str(w.path)}
            for name, w in app.workflows.items()
        },
        "status": "ok",
    }


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


def cmd_worker(app: App, args: argparse.Namespace) -> dict[str, Any]:
    logs.configure(app.settings)
    if args.once:
        done = scheduler.run_due_now(app)
        done["emails"] = asyncio.run(delivery.run(app, once=True))
        return done
    stop = asyncio.Event()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signal_number, stop.set)
        jobs = scheduler.build(app)
        jobs.start()
        try:
            return await delivery.run(app, once=False, stop=stop)
        finally:
            jobs.shutdown(wait=False)

    return {"emails": asyncio.run(main())}


def cmd_outbox_deliver(app: App, args: argparse.Namespace) -> dict[str, Any]:
    return {"handled": asyncio.run(delivery.run(app, once=True))}


def cmd_outbox_list(app: App, args: argparse.Namespace) -> list[dict[str, Any]]:
    with app.read() as tx:
        return queries.list_outbox(tx, status=args.status)


def cmd_outbox_show(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.read() as tx:
        message = tx.session.get(OutboxMessage, args.id)
        if message is None:
            raise NotFound(f"no outbox message {args.id}")
        mail = email.message_from_bytes(
            mailer.compose(tx.session, app.settings, message), policy=email.policy.default
        )
        text = mail.get_body(("plain",))
        return {
            "id": message.id,
            "status": message.status,
            "attempts": message.attempts,
            "last_error": message.last_error,
            **{name.lower(): str(value) for name, value in mail.items()},
            "parts": [part.get_content_type() for part in mail.iter_parts()],
            "text": text.get_content() if text is not None else "",
        }


def cmd_outbox_retry(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        message = tx.session.get(OutboxMessage, args.id)
        if message is None:
            raise NotFound(f"no outbox message {args.id}")
        if message.status != "failed":
            raise Refused(
                f"message {args.id} is {message.status}; only a failed one is retried",
                rule="outbox_status",
            )
        message.status, message.next_attempt_at, message.attempts = "pending", tx.now, 0
        return {"id": message.id, "status": message.status}


def cmd_smtp_sink(app: App, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.dir) if args.dir else app.settings.sink_directory
    controller = sink.start(folder, host="127.0.0.1", port=args.port or app.settings.smtp_port)
    print(
        f"SMTP sink on 127.0.0.1:{controller.port}, saving mail to {folder.resolve()}/", flush=True
    )
    stopped = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stopped.set())
    stopped.wait()
    controller.stop()
    return {"stopped": True}


def cmd_upcoming(app: App, args: argparse.Namespace) -> list[dict[str, Any]]:
    with app.read() as tx:
        end = _local_datetime(args.until, app, "--until", end_of_day=True)
        return upcoming.until(tx, end)


def _local_datetime(text: str, app: App, key: str, *, end_of_day: bool = False) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(key, f"{text!r} is not a date like 2027-03-31") from None
    if end_of_day and len(text) == 10:
        moment = moment.replace(hour=23, minute=59)
    return moment if moment.tzinfo else moment.replace(tzinfo=app.settings.time_zone)


def cmd_intake_list(app: App, args: argparse.Namespace) -> list[dict[str, Any]]:
    with app.unit() as tx:
        intake.ensure_rounds(tx)
        return intake.list_rounds(tx)


def cmd_intake_create(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        round_ = intake.create_round(tx, name=args.name, opens=args.opens, closes=args.closes)
        return {"id": round_.id, "name": round_.name}


def cmd_intake_move(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        round_ = intake.move_round(tx, round_id=args.id, opens=args.opens, closes=args.closes)
        return {"id": round_.id, "name": round_.name}


def cmd_intake_cancel(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        round_ = intake.cancel_round(tx, round_id=args.id)
        return {"id": round_.id, "name": round_.name, "status": "cancelled"}


def _read_text(path: str, key: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInput(key, f"cannot read {path}: {error.strerror}") from None


def cmd_announce_draft(app: App, args: argparse.Namespace) -> dict[str, Any]:
    texts = {
        "et": (args.subject_et, _read_text(args.body_et, "--body-et")),
        "en": (args.subject_en, _read_text(args.body_en, "--body-en")),
    }
    with app.unit() as tx:
        announcement = bulk.draft_announcement(
            tx, audience=args.audience, author_email=args.actor, texts=texts
        )
        return bulk.preview(tx, announcement)


def cmd_announce_send(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        return {"id": args.id, "queued": bulk.send_announcement(tx, announcement_id=args.id)}


def cmd_subscriber_add(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        subscriber = bulk.subscribe(tx, email=args.email, language=args.language)
        return {"email": subscriber.email, "confirmed": subscriber.confirmed_at is not None}


def cmd_serve(app: App, args: argparse.Namespace) -> dict[str, Any]:
    import uvicorn  # only the web process needs it

    from lifecycle.web.app import create

    print(f"Mentorlus on http://{args.host}:{args.port}/ (console: /console)", flush=True)
    logs.configure(app.settings)
    # log_config=None: uvicorn's records (its access log has every link's token in the path)
    # go through our handler, which masks the tokens, instead of uvicorn's own.
    uvicorn.run(create(app), host=args.host, port=args.port, log_level="info", log_config=None)
    return {"stopped": True}


def cmd_user_add(app: App, args: argparse.Namespace) -> dict[str, Any]:
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass()
    with app.unit() as tx:
        person = add_user(tx, name=args.name, email=args.email, role=args.role, password=password)
        return {"email": person.email, "role": person.role}


def cmd_demo_load(app: App, args: argparse.Namespace) -> dict[str, Any]:
    db.migrate(app.engine)
    return demo.load(app.settings)


def cmd_person_export(app: App, args: argparse.Namespace) -> dict[str, Any]:
    args.json = True  # the export is a JSON document, with or without --json
    with app.read() as tx:
        return privacy.export_person(tx, email=args.email)


def cmd_person_erase(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        return privacy.erase_person(tx, email=args.email, actor_email=args.actor, force=args.force)


def cmd_privacy_retention(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        return {"anonymised_relations": privacy.run_retention(tx)}


def cmd_backup(app: App, args: argparse.Namespace) -> dict[str, Any]:
    return backup.backup(app, Path(args.path), force=args.force)


def cmd_restore(app: App, args: argparse.Namespace) -> dict[str, Any]:
    return backup.restore(app, Path(args.path), force=args.force)


def cmd_report(app: App, args: argparse.Namespace) -> str | list[dict[str, Any]]:
    with app.read() as tx:
        table = reports.build(tx, args.name)
    if args.json:
        return table.as_dicts()
    return disclosure.to_csv(table) if args.csv else disclosure.to_text(table)


def _print_human(result: Any) -> None:
    if isinstance(result, str):  # already laid out (a report)
        print(result, end="")
        return
    if isinstance(result, list):
        for row in result:
            print("  ".join(f"{value}" for value in row.values()))
        if not result:
            print("(none)")
        return
    for key, value in result.items():
        if key == "timeline":
            print("timeline:")
            for entry in value:
                print("  " + "  ".join(str(v) for v in entry.values() if v not in (None, "")))
        elif isinstance(value, list):
            print(f"{key}:")
            for item in value:
                print(
                    "  "
                    + (
                        "  ".join(str(v) for v in item.values())
                        if isinstance(item, dict)
                        else str(item)
                    )
                )
        else:
            print(f"{key}: {value}")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mentorlus", description="Run the Mentorlus service.")
    top.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        group: Any, name: str, handler: Callable[..., Any], text: str
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    add(commands, "init", cmd_init, "create the database or upgrade it to the newest schema")
    add(commands, "check", cmd_check, "validate config.toml and the workflow files")

    application = commands.add_parser("application", help="mentor applications").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(application, "submit", cmd_application_submit, "submit a mentor application")
    sub.add_argument("--file", required=True, help="JSON file with the applicant and profile")
    sub.add_argument("--actor", help="email of the coordinator entering it on someone's behalf")

    request = commands.add_parser("request", help="mentoring requests").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(request, "submit", cmd_request_submit, "submit a mentoring request")
    sub.add_argument("--file", required=True, help="JSON file with mentee, mentor and question")
    sub.add_argument("--actor", help="email of the coordinator entering it on someone's behalf")

    case = commands.add_parser("case", help="list, show and advance cases").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(case, "list", cmd_case_list, "list cases, oldest in their state first")
    sub.add_argument("--state", help="only cases in this state")
    sub.add_argument("--workflow", choices=["mentor_application", "mentoring"])
    sub = add(case, "show", cmd_case_show, "show a case: state, next steps, timeline")
    sub.add_argument("id", help="case ID, like A-12 or M-7")
    sub.add_argument(
        "--role",
        default="coordinator",
        help="list the next steps this role may take (default: coordinator)",
    )
    sub = add(case, "advance", cmd_case_advance, "fire a trigger on a case")
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

    sub = add(
        commands,
        "worker",
        cmd_worker,
        "run the worker: timers, intake rounds, digests and mail delivery until stopped",
    )
    sub.add_argument("--once", action="store_true", help="do what is due now, then exit")

    outbox = commands.add_parser("outbox", help="inspect and deliver the outbox").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(outbox, "deliver", cmd_outbox_deliver, "send every due message, then exit")
    sub.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="drain and exit (the long-running form is `mentorlus worker`)",
    )
    sub = add(outbox, "list", cmd_outbox_list, "list outbox messages, failed first")
    sub.add_argument("--status", choices=["pending", "sending", "sent", "failed"])
    sub = add(outbox, "show", cmd_outbox_show, "show one message as it is sent")
    sub.add_argument("id", type=int)
    sub = add(outbox, "retry", cmd_outbox_retry, "send a failed message again")
    sub.add_argument("id", type=int)

    sub = add(
        commands,
        "smtp-sink",
        cmd_smtp_sink,
        "run a local SMTP server that keeps every message as an .eml file",
    )
    sub.add_argument("--dir", help="folder for the .eml files (default: [sink] directory)")
    sub.add_argument("--port", type=int, help="port on 127.0.0.1 (default: [smtp] port)")

    sub = add(
        commands,
        "upcoming",
        cmd_upcoming,
        "list every email and automatic step due until a date if nobody acts",
    )
    sub.add_argument("--until", required=True, help="a date (or date and time), e.g. 2027-03-31")

    rounds = commands.add_parser("intake", help="intake rounds").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add(rounds, "list", cmd_intake_list, "list intake rounds (the schedule's are created ahead)")
    sub = add(rounds, "create", cmd_intake_create, "create an extra intake round")
    sub.add_argument("--name", required=True)
    sub.add_argument("--opens", required=True, help="local date and time, e.g. 2027-05-01T09:00")
    sub.add_argument("--closes", required=True, help="local date and time")
    sub = add(rounds, "move", cmd_intake_move, "move an intake round")
    sub.add_argument("id", type=int)
    sub.add_argument("--opens", required=True, help="local date and time")
    sub.add_argument("--closes", required=True, help="local date and time")
    sub = add(rounds, "cancel", cmd_intake_cancel, "cancel an intake round")
    sub.add_argument("id", type=int)

    announce = commands.add_parser("announce", help="one-off announcements").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(
        announce,
        "draft",
        cmd_announce_draft,
        "write an announcement and preview who will get it (nothing is sent yet)",
    )
    sub.add_argument("--audience", required=True, choices=list(bulk.AUDIENCES))
    sub.add_argument("--actor", required=True, help="the coordinator's email")
    sub.add_argument("--subject-et", required=True)
    sub.add_argument("--body-et", required=True, help="file with the Estonian text")
    sub.add_argument("--subject-en", required=True)
    sub.add_argument("--body-en", required=True, help="file with the English text")
    sub = add(announce, "send", cmd_announce_send, "send a drafted announcement, once")
    sub.add_argument("id", type=int)

    subscribers = commands.add_parser("subscriber", help="intake notifications").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(
        subscribers,
        "add",
        cmd_subscriber_add,
        "subscribe an address (it gets a confirmation link first)",
    )
    sub.add_argument("email")
    sub.add_argument("--language", default="et", choices=["et", "en"])

    sub = add(commands, "serve", cmd_serve, "run the web server (pages, console, JSON API)")
    sub.add_argument("--host", default="127.0.0.1")
    sub.add_argument("--port", type=int, default=8000)

    users = commands.add_parser("user", help="staff logins").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(
        users, "add", cmd_user_add, "add a coordinator or committee member, or reset their password"
    )
    sub.add_argument("--role", required=True, choices=["coordinator", "committee"])
    sub.add_argument("--email", required=True)
    sub.add_argument("--name", default="")
    sub.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input instead of prompting",
    )

    demo_cmd = commands.add_parser("demo", help="demo data").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add(demo_cmd, "load", cmd_demo_load, "load fictional demo data into the database")

    person = commands.add_parser("person", help="a person's data").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(person, "export", cmd_person_export, "print everything held about a person, as JSON")
    sub.add_argument("email")
    sub = add(
        person,
        "erase",
        cmd_person_erase,
        "erase a person: personal data and confidential texts go, statistics stay",
    )
    sub.add_argument("email")
    sub.add_argument("--actor", help="email of the coordinator who asks for it (recorded)")
    sub.add_argument("--force", action="store_true", help="erase a coordinator too")
    privacy_cmd = commands.add_parser("privacy", help="retention").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    sub = add(
        privacy_cmd,
        "retention",
        cmd_privacy_retention,
        "delete the confidential texts of relations ended before the retention period",
    )
    sub.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="run now and exit (the worker runs it daily)",
    )
    sub = add(
        commands, "backup", cmd_backup, "copy the SQLite database to PATH, also while it runs"
    )
    sub.add_argument("path")
    sub.add_argument("--force", action="store_true", help="replace PATH if it exists")
    sub = add(
        commands,
        "restore",
        cmd_restore,
        "replace the SQLite database with a backup (the service must be stopped)",
    )
    sub.add_argument("path")
    sub.add_argument("--force", action="store_true", help="replace an existing database")

    sub = add(
        commands,
        "report",
        cmd_report,
        "print a report for the association (small groups hidden): a table, or --csv",
    )
    sub.add_argument("name", choices=list(reports.REPORTS))
    sub.add_argument("--csv", action="store_true", help="comma-separated values, header first")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    app: App | None = None
    try:
        app = bootstrap.build(load_settings())
        result = args.handler(app, args)
    except (ConfigError, WorkflowError) as error:
        print(f"mentorlus: configuration error: {error}", file=sys.stderr)
        return 2
    except Refused as error:
        print(f"refused ({error.rule}): {error.reason}", file=sys.stderr)
        return 1
    except (Conflict, NotFound, InvalidInput, MentorlusError) as error:
        kind = {Conflict: "conflict", NotFound: "not found", InvalidInput: "invalid input"}
        print(f"{kind.get(type(error), 'error')}: {error}", file=sys.stderr)
        return 1
    except db.UNAVAILABLE as error:
        print(f"unavailable: {db.unavailable_reason(error)}; nothing was changed", file=sys.stderr)
        return 1
    finally:
        if app is not None:
            # Pooled connections would stay open until the engine is collected: a restore
            # run next in the same process would find the database in use.
            app.engine.dispose()
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    else:
        _print_human(result)
    return 0
