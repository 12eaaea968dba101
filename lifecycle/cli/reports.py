"""Reports for the association, with the small groups hidden: a laid-out table, CSV or JSON."""

from __future__ import annotations

import argparse
from typing import Any

from lifecycle.bootstrap import App
from lifecycle.cli.subcommands import Commands, add_command
from lifecycle.reports import disclosure, tables


def cmd_report(app: App, args: argparse.Namespace) -> str | list[dict[str, Any]]:
    with app.read() as tx:
        table = tables.build(tx, args.name)
    if args.json:
        return table.as_dicts()
    return disclosure.to_csv(table) if args.csv else disclosure.to_text(table)


def register(commands: Commands) -> None:
    sub = add_command(
        commands,
        "report",
        cmd_report,
        "print a report for the association (small groups hidden): a table, or --csv",
    )
    sub.add_argument("name", choices=list(tables.REPORTS))
    sub.add_argument("--csv", action="store_true", help="comma-separated values, header first")
