"""`mentorlus`: the top-level parser, and what every command shares — `--json`, and the exit
code: 0 on success, 1 with a one-line reason on a refusal or when the database is unavailable,
2 on a configuration error."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from lifecycle import bootstrap
from lifecycle.bootstrap import App
from lifecycle.cli import (
    announcements,
    cases,
    deployment,
    mail,
    privacy,
    reports,
    schedule,
    tokens,
    web,
)
from lifecycle.config import ConfigError, load_settings
from lifecycle.errors import Conflict, InvalidInput, MentorlusError, NotFound, Refused
from lifecycle.store import db
from lifecycle.workflows.spec import WorkflowError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="mentorlus", description="Run the Mentorlus service.")
    top.add_argument("--json", action="store_true", help="print machine-readable JSON")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # `mentorlus --help` lists the commands in this order.
    for register in (
        deployment.register,
        cases.register,
        mail.register,
        schedule.register,
        announcements.register,
        web.register,
        tokens.register,
        privacy.register,
        reports.register,
    ):
        register(commands)
    return top


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
