"""The schema of a step's data: the fields a transition declares in its workflow file, each
with a type and its bounds, and the one check every caller's data goes through.

Pages send every value as text, so each type takes its form spelling too ("3", "true",
"2026-03-01T14:00"); JSON callers (the API, the CLI) may send the JSON type itself. Nothing
else passes: not a number for a date, not true or 4.5 for a whole number, not a list or an
object where one value is expected. A refusal is an InvalidInput naming the field.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeVar

from lifecycle.config import Settings
from lifecycle.errors import InvalidInput

# Control characters text may not hold; tabs and line breaks are text.
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
FIELD_TYPES = ("text", "datetime", "date", "int", "bool", "choice", "email_list")
# The bounds a workflow file may declare at most, so that every caller can hold them (the
# API's body schema takes no longer text and no longer list).
MAX_TEXT = 10_000
MAX_ITEMS = 20
MAX_ADDRESS = 320  # the longest address (RFC 5321), as the people table holds
# What an integer column holds.
INT_MAX = 2**31 - 1
ADDRESS = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")
# What a form's yes/no sends, and what people type for one.
YES = ("true", "yes", "1", "on")
NO = ("false", "no", "0", "off")
# A field name shown in a refusal as typed only when it could be a field's name.
FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,40}")
Moment = TypeVar("Moment", bound=date)


@dataclass(frozen=True)
class FieldSpec:
    """One field a step takes, as its workflow file declares it."""

    name: str
    type: str
    required: bool
    choices: tuple[str, ...] = ()
    max_length: int = MAX_TEXT  # text: the longest taken, in characters
    minimum: int = 0  # int: the smallest taken
    maximum: int = INT_MAX  # int: the largest taken
    max_items: int = MAX_ITEMS  # email_list: the most addresses taken


# The keys a field of each type may declare besides `type` and `required`.
TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "text": ("max_length",),
    "datetime": (),
    "date": (),
    "int": ("minimum", "maximum"),
    "bool": (),
    "choice": ("choices",),
    "email_list": ("max_items",),
}


class Unreadable(ValueError):
    """A value a field cannot take: the rule (for the reader's language) and its numbers."""

    def __init__(self, message: str, rule: str, **params: int) -> None:
        super().__init__(message)
        self.rule = rule
        self.params = params


def parse_fields(
    specs: tuple[FieldSpec, ...], raw: Mapping[str, Any], settings: Settings
) -> dict[str, Any]:
    """Check and convert the data a step needs; unknown keys are refused, not ignored."""
    known = {spec.name for spec in specs}
    unknown = sorted(set(raw) - known, key=str)
    if unknown:
        allowed = ", ".join(sorted(known)) or "none"
        raise InvalidInput(
            _shown(unknown[0]), f"this step takes no such field (it takes: {allowed})"
        )
    values: dict[str, Any] = {}
    for spec in specs:
        value = raw.get(spec.name)
        if value is None or value == "" or value == []:
            if spec.required:
                raise InvalidInput(spec.name, "is required for this step", rule="required")
            continue
        values[spec.name] = read_field(spec, value, settings)
    return values


def read_field(spec: FieldSpec, value: Any, settings: Settings) -> Any:
    """The value a step works with, or InvalidInput naming the field and what it takes."""
    try:
        return READERS[spec.type](spec, value, settings)
    except Unreadable as error:
        raise InvalidInput(spec.name, str(error), rule=error.rule, params=error.params) from None


def _shown(name: Any) -> str:
    # An unknown key is echoed only when it looks like a name: the refusal is one line,
    # whatever was typed (a line break, a megabyte).
    return name if isinstance(name, str) and FIELD_NAME.fullmatch(name) else "a field name"


def _text(spec: FieldSpec, value: Any, settings: Settings) -> str:
    if not isinstance(value, str):
        raise Unreadable("must be text", "text")
    text = value.strip()
    if spec.required and not text:
        raise Unreadable("is required for this step", "required")
    _plain_text(text)
    if len(text) > spec.max_length:
        raise Unreadable(
            f"must be at most {spec.max_length} characters (it has {len(text)})",
            "too_long",
            limit=spec.max_length,
            length=len(text),
        )
    return text


def _plain_text(text: str) -> None:
    if CONTROL_IN_TEXT.search(text):
        raise Unreadable("must be text without control characters", "control")
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, as JSON or a command line can spell it
        raise Unreadable("is not valid Unicode text (a lone surrogate)", "control") from None


def _int(spec: FieldSpec, value: Any, settings: Settings) -> int:
    if isinstance(value, str) and WHOLE_NUMBER.fullmatch(value.strip()):
        digits = value.strip()
        if len(digits) > 20:  # beyond any bound; int() of thousands of digits is slow
            raise _out_of_bounds(spec, negative=digits.startswith("-"))
        value = int(digits)
    # A bool is an int to Python, and a float would be cut silently (4.5 → 4).
    if isinstance(value, bool) or not isinstance(value, int):
        raise Unreadable("must be a whole number", "whole_number")
    if not spec.minimum <= value <= spec.maximum:
        raise _out_of_bounds(spec, negative=value < spec.minimum)
    return value


def _out_of_bounds(spec: FieldSpec, *, negative: bool) -> Unreadable:
    if negative:
        return Unreadable(f"must be at least {spec.minimum}", "at_least", limit=spec.minimum)
    return Unreadable(f"must be at most {spec.maximum}", "at_most", limit=spec.maximum)


def _bool(spec: FieldSpec, value: Any, settings: Settings) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in YES:
        return True
    if isinstance(value, str) and value.strip().lower() in NO:
        return False
    raise Unreadable("must be yes or no", "yes_or_no")


def _date(spec: FieldSpec, value: Any, settings: Settings) -> date:
    # A datetime is a date to Python; its time would be dropped without a word.
    plain = isinstance(value, date) and not isinstance(value, datetime)
    day = value if plain else _iso(date, value)
    if day is None:
        raise Unreadable("must be a date like 2026-03-01", "date")
    return _plausible(day)


def _datetime(spec: FieldSpec, value: Any, settings: Settings) -> datetime:
    moment = value if isinstance(value, datetime) else _iso(datetime, value)
    if moment is None:
        raise Unreadable("must be a date and time like 2026-03-01T14:00", "date_time")
    if moment.tzinfo is None:  # a local time, as people type it
        moment = moment.replace(tzinfo=settings.time_zone)
    return _plausible(moment)


def _iso(kind: type[Moment], value: Any) -> Moment | None:
    """The date, or date and time, that text spells in ISO 8601; None for anything else."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return kind.fromisoformat(value.strip())
    return None


def _plausible(moment: Moment) -> Moment:
    # A year far out would overflow the reminders computed from it.
    if not 1900 <= moment.year <= 2200:
        raise Unreadable("must be a date between the years 1900 and 2200", "date_range")
    return moment


def _choice(spec: FieldSpec, value: Any, settings: Settings) -> str:
    if not isinstance(value, str) or value not in spec.choices:
        raise Unreadable(f"must be one of {', '.join(spec.choices)}", "choose_listed")
    return value


def _email_list(spec: FieldSpec, value: Any, settings: Settings) -> list[str]:
    # A form sends the addresses as one text, comma-separated (the console's lines become commas).
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise Unreadable("must be a list of email addresses", "email_list")
    addresses = [item.strip().lower() for item in items if item.strip()]
    if len(addresses) > spec.max_items:
        raise Unreadable(
            f"must be at most {spec.max_items} addresses (it has {len(addresses)})",
            "too_many_addresses",
            limit=spec.max_items,
            length=len(addresses),
        )
    for number, address in enumerate(addresses, start=1):
        if len(address) > MAX_ADDRESS:
            raise Unreadable(
                f"address {number} is longer than an email address can be", "email_list"
            )
        _plain_text(address)
        if not ADDRESS.fullmatch(address):
            raise Unreadable(f"address {number} is not an email address", "email_list")
    return addresses


READERS: dict[str, Callable[[FieldSpec, Any, Settings], Any]] = {
    "text": _text,
    "datetime": _datetime,
    "date": _date,
    "int": _int,
    "bool": _bool,
    "choice": _choice,
    "email_list": _email_list,
}
