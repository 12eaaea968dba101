"""Setting up a deployment: `init` creates or upgrades the database, `check` validates the
configuration and the workflow files."""

from __future__ import annotations

import argparse
from typing import Any

from lifecycle.bootstrap import App
from lifecycle.cli.subcommands import Commands, add_command
from lifecycle.store import db


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


def register(commands: Commands) -> None:
    add_command(
        commands, "init", cmd_init, "create the database or upgrade it to the newest schema"
    )
    add_command(commands, "check", cmd_check, "validate config.toml and the workflow files")
