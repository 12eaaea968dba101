"""Getting mail out: the `worker` (delivery until stopped, with the timers, intake rounds and
digests scheduled alongside), the `outbox` to inspect, retry and drain, and the local
`smtp-sink` that keeps every message sent to it as an .eml file."""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import signal
import threading
from pathlib import Path
from typing import Any

from lifecycle import logs
from lifecycle.bootstrap import App
from lifecycle.cases import queries
from lifecycle.cli.subcommands import Commands, add_command, add_group
from lifecycle.errors import NotFound, Refused
from lifecycle.mail import delivery, mailer, sink
from lifecycle.schedule import scheduler
from lifecycle.store.models import OutboxMessage


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


def register(commands: Commands) -> None:
    sub = add_command(
        commands,
        "worker",
        cmd_worker,
        "run the worker: timers, intake rounds, digests and mail delivery until stopped",
    )
    sub.add_argument("--once", action="store_true", help="do what is due now, then exit")

    outbox = add_group(commands, "outbox", "inspect and deliver the outbox")
    sub = add_command(outbox, "deliver", cmd_outbox_deliver, "send every due message, then exit")
    sub.add_argument(
        "--once",
        action="store_true",
        required=True,
        help="drain and exit (the long-running form is `mentorlus worker`)",
    )
    sub = add_command(outbox, "list", cmd_outbox_list, "list outbox messages, failed first")
    sub.add_argument("--status", choices=["pending", "sending", "sent", "failed"])
    sub = add_command(outbox, "show", cmd_outbox_show, "show one message as it is sent")
    sub.add_argument("id", type=int)
    sub = add_command(outbox, "retry", cmd_outbox_retry, "send a failed message again")
    sub.add_argument("id", type=int)

    sub = add_command(
        commands,
        "smtp-sink",
        cmd_smtp_sink,
        "run a local SMTP server that keeps every message as an .eml file",
    )
    sub.add_argument("--dir", help="folder for the .eml files (default: [sink] directory)")
    sub.add_argument("--port", type=int, help="port on 127.0.0.1 (default: [smtp] port)")
