"""The web service from the operator's side: `serve` runs it, `user add` gives a coordinator or
committee member their console login and `user remove` takes it away, `demo load` fills the
database with fictional data to show it with."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from lifecycle import logs
from lifecycle.bootstrap import App
from lifecycle.cases.accounts import add_user, remove_user
from lifecycle.cli.subcommands import Commands, add_command, add_group
from lifecycle.demo import story as demo
from lifecycle.store import db


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


def cmd_user_remove(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        person = remove_user(tx, email=args.email)
        return {"email": person.email, "removed": True}


def cmd_demo_load(app: App, args: argparse.Namespace) -> dict[str, Any]:
    db.migrate(app.engine)
    return demo.load(app.settings)


def register(commands: Commands) -> None:
    sub = add_command(commands, "serve", cmd_serve, "run the web server (pages, console, JSON API)")
    sub.add_argument("--host", default="127.0.0.1")
    sub.add_argument("--port", type=int, default=8000)

    users = add_group(commands, "user", "staff logins")
    sub = add_command(
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
    sub = add_command(
        users,
        "remove",
        cmd_user_remove,
        "take a staff member's role and password away and end their console sessions",
    )
    sub.add_argument("--email", required=True)

    demo_data = add_group(commands, "demo", "demo data")
    add_command(demo_data, "load", cmd_demo_load, "load fictional demo data into the database")
