"""Bulk mail: one-off announcements, drafted and previewed before they are sent, and the
subscribers notified of intake rounds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lifecycle.bootstrap import App
from lifecycle.cli.subcommands import Commands, add_command, add_group
from lifecycle.errors import InvalidInput
from lifecycle.mail import bulk


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


def register(commands: Commands) -> None:
    announce = add_group(commands, "announce", "one-off announcements")
    sub = add_command(
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
    sub = add_command(announce, "send", cmd_announce_send, "send a drafted announcement, once")
    sub.add_argument("id", type=int)

    subscribers = add_group(commands, "subscriber", "intake notifications")
    sub = add_command(
        subscribers,
        "add",
        cmd_subscriber_add,
        "subscribe an address (it gets a confirmation link first)",
    )
    sub.add_argument("email")
    sub.add_argument("--language", default="et", choices=["et", "en"])
