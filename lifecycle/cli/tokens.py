"""Personal API tokens for the staff's integrations: `token create` makes one and prints it the
only time it can be seen, `token list` shows what each is for and when it was last used (never
the token), `token revoke` stops one from working."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lifecycle.bootstrap import App
from lifecycle.cases import tokens
from lifecycle.cli.subcommands import Commands, add_command, add_group


def cmd_token_create(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        row, token = tokens.create_token(tx, email=args.email, name=args.name)
        created = {"id": row.id, "email": args.email.strip().lower(), "name": row.name}
    print("The token is shown only now; the service keeps only its hash.", file=sys.stderr)
    return {**created, "token": token}


def cmd_token_list(app: App, args: argparse.Namespace) -> list[dict[str, Any]]:
    with app.read() as tx:
        return tokens.list_tokens(tx, email=args.email)


def cmd_token_revoke(app: App, args: argparse.Namespace) -> dict[str, Any]:
    with app.unit() as tx:
        row = tokens.revoke_token(tx, token_id=args.id)
        return {"id": row.id, "name": row.name, "revoked": tokens.local_time(tx, row.revoked_at)}


def register(commands: Commands) -> None:
    group = add_group(commands, "token", "personal API tokens for the staff's integrations")
    sub = add_command(
        group,
        "create",
        cmd_token_create,
        "make an API token for a staff login and print it, once (use it as "
        "`Authorization: Bearer TOKEN`)",
    )
    sub.add_argument("--email", required=True, help="the staff member's login email")
    sub.add_argument("--name", required=True, help="what the token is for, e.g. the website")
    sub = add_command(group, "list", cmd_token_list, "list API tokens, never the tokens themselves")
    sub.add_argument("--email", help="only this staff member's tokens")
    sub = add_command(group, "revoke", cmd_token_revoke, "stop an API token from working")
    sub.add_argument("id", type=int, help="the token's id, as `token list` shows it")
