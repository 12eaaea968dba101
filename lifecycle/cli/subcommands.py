"""The two shapes every command group declares its parsers in: a command, which runs a handler,
and a group of commands under one name (`mentorlus case list`), which needs one of them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeAlias

from lifecycle.bootstrap import App

# argparse's class for a set of subcommands is private and generic only to type checkers,
# hence a quoted alias.
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Handler: TypeAlias = Callable[[App, argparse.Namespace], Any]


def add_command(
    commands: Commands, name: str, handler: Handler, text: str
) -> argparse.ArgumentParser:
    """A command whose `text` is both its line in its group's list and its own description."""
    command = commands.add_parser(name, help=text, description=text)
    command.set_defaults(handler=handler)
    return command


def add_group(commands: Commands, name: str, text: str) -> Commands:
    return commands.add_parser(name, help=text).add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
