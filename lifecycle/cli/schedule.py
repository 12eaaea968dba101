"""What comes by the clock: `upcoming` forecasts every email and automatic step due until a
date, `intake` lists, adds, moves and cancels the intake rounds."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from lifecycle.bootstrap import App
from lifecycle.cli.subcommands import Commands, add_command, add_group
from lifecycle.errors import InvalidInput
from lifecycle.schedule import intake, upcoming


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


def register(commands: Commands) -> None:
    sub = add_command(
        commands,
        "upcoming",
        cmd_upcoming,
        "list every email and automatic step due until a date if nobody acts",
    )
    sub.add_argument("--until", required=True, help="a date (or date and time), e.g. 2027-03-31")

    rounds = add_group(commands, "intake", "intake rounds")
    add_command(
        rounds, "list", cmd_intake_list, "list intake rounds (the schedule's are created ahead)"
    )
    sub = add_command(rounds, "create", cmd_intake_create, "create an extra intake round")
    sub.add_argument("--name", required=True)
    sub.add_argument("--opens", required=True, help="local date and time, e.g. 2027-05-01T09:00")
    sub.add_argument("--closes", required=True, help="local date and time")
    sub = add_command(rounds, "move", cmd_intake_move, "move an intake round")
    sub.add_argument("id", type=int)
    sub.add_argument("--opens", required=True, help="local date and time")
    sub.add_argument("--closes", required=True, help="local date and time")
    sub = add_command(rounds, "cancel", cmd_intake_cancel, "cancel an intake round")
    sub.add_argument("id", type=int)
