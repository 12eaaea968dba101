"""A person's data and the database as a whole: a person's export and erasure, the retention of
ended relations, and backup and restore of the SQLite file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lifecycle.bootstrap import App
from lifecycle.cli.subcommands import Commands, add_command, add_group
from lifecycle.privacy import backup, erasure, export, retention


def cmd_person_export(app: App, args: argparse.Namespace) -> dict[str, Any]:
    args.json = True  # the export is a JSON document, with or without --json
    with app.read() as tx:
        return export.export_person(tx, email=args.email)


def cmd_person_erase(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        return erasure.erase_person(tx, email=args.email, actor_email=args.actor, force=args.force)


def cmd_privacy_retention(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        return {"anonymised_relations": retention.run_retention(tx)}


def cmd_backup(app: App, args: argparse.Namespace) -> dict[str, Any]:
    return backup.backup(app, Path(args.path), force=args.force)


def cmd_restore(app: App, args: argparse.Namespace) -> dict[str, Any]:
    return backup.restore(app, Path(args.path), force=args.force)


def register(commands: Commands) -> None:
    person = add_group(commands, "person", "a person's data")
    sub = add_command(
        person, "export", cmd_person_export, "print everything held about a person, as JSON"
    )
    sub.add_argument("email")
    sub = add_command(
        person,
        "erase",
        cmd_person_erase,
        "erase a person: personal data and confidential texts go, statistics stay",
    )
    sub.add_argument("email")
    sub.add_argument("--actor", help="email of the coordinator who asks for it (recorded)")
    sub.add_argument("--force", action="store_true", help="erase a coordinator too")

    privacy = add_group(commands, "privacy", "retention")
    sub = add_command(
        privacy,
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

    sub = add_command(
        commands, "backup", cmd_backup, "copy the SQLite database to PATH, also while it runs"
    )
    sub.add_argument("path")
    sub.add_argument("--force", action="store_true", help="replace PATH if it exists")
    sub = add_command(
        commands,
        "restore",
        cmd_restore,
        "replace the SQLite database with a backup (the service must be stopped)",
    )
    sub.add_argument("path")
    sub.add_argument("--force", action="store_true", help="replace an existing database")
