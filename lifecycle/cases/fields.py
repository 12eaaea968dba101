"""The fields of what people submit — texts, addresses, numbers, choices, regions and the
profile an application declares — each checked and refused with InvalidInput naming the field
as the form and the API know it. The use cases in `services` read their input through these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from lifecycle.errors import InvalidInput
from lifecycle.store.models import (
    CREDENTIAL_KINDS,
    DEGREE_LEVELS,
    FORMATS,
    LANGUAGES,
    REGIONS,
    TOPICS,
    Credential,
)
from lifecycle.workflows.stepdata import CONTROL_IN_TEXT

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Longest texts taken, in characters: a name or a title; a question or background.
LINE_LIMIT = 200
MULTILINE_LIMIT = 10_000


def collect(readers: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Every field read, in the order given (the form's); one InvalidInput with every
    problem found, so that a person fixes them all at once."""
    values, found = {}, []
    for name, read in readers.items():
        try:
            values[name] = read()
        except InvalidInput as problem:
            found.append(problem)
    if found:
        raise InvalidInput.all_of(found)
    return values


def text(
    data: Mapping[str, Any],
    key: str,
    *,
    required: bool = True,
    multiline: bool = False,
    default: str = "",
    limit: int | None = None,
) -> str:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise InvalidInput(key, "must be text", rule="text")
    if value is None or value.strip() == "":
        if required:
            raise InvalidInput(key, "is required", rule="required")
        return default
    typed = value.strip()
    if not multiline and CONTROL.search(typed):
        raise InvalidInput(key, "must be one line without control characters", rule="one_line")
    if CONTROL_IN_TEXT.search(typed):
        raise InvalidInput(key, "must be text without control characters", rule="control")
    limit = limit or (MULTILINE_LIMIT if multiline else LINE_LIMIT)
    if len(typed) > limit:
        raise InvalidInput(
            key,
            f"must be at most {limit} characters (it has {len(typed)})",
            rule="too_long",
            params={"limit": limit, "length": len(typed)},
        )
    return typed


def email_address(data: Mapping[str, Any], key: str = "email") -> str:
    """The address in data[key], lower-cased; InvalidInput naming the field otherwise."""
    address = text(data, key).lower()
    if not EMAIL.match(address) or CONTROL.search(address):
        raise InvalidInput(key, f"'{address}' is not an email address", rule="email")
    return address


def whole_number(
    data: Mapping[str, Any], key: str, *, minimum: int, maximum: int, default: int | None = None
) -> int:
    value = data.get(key, default)
    # A float would be cut silently (2.7 → 2); a bool is an int to Python.
    if isinstance(value, bool | float) or not isinstance(value, int | str):
        raise InvalidInput(key, "must be a whole number", rule="whole_number")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(key, "must be a whole number", rule="whole_number") from None
    if number < minimum:
        raise InvalidInput(
            key, f"must be at least {minimum}", rule="at_least", params={"limit": minimum}
        )
    if number > maximum:
        raise InvalidInput(
            key, f"must be at most {maximum}", rule="at_most", params={"limit": maximum}
        )
    return number


def flag(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(key, "must be true or false", rule="yes_or_no")
    return value


def choices(data: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> list[str]:
    value = data.get(key) or []
    if not isinstance(value, str | list):
        raise InvalidInput(key, f"must be a list of {', '.join(allowed)}", rule="choose_listed")
    items = [value] if isinstance(value, str) else value
    if not items:
        raise InvalidInput(key, f"choose at least one of {', '.join(allowed)}", rule="choose_one")
    for item in items:
        if not isinstance(item, str) or item not in allowed:
            raise InvalidInput(
                key, f"'{item}' is not one of {', '.join(allowed)}", rule="choose_listed"
            )
    return list(dict.fromkeys(items))


def choice(data: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str) -> str:
    value = data.get(key) or default
    if value not in allowed:
        raise InvalidInput(
            key, f"'{value}' is not one of {', '.join(allowed)}", rule="choose_listed"
        )
    return str(value)


def region(data: Mapping[str, Any], key: str) -> str:
    """A region from the list (REGIONS), or none; never a region of someone's own wording."""
    region = text(data, key, required=False)
    if region and region not in REGIONS:
        raise InvalidInput(key, f"'{region}' is not a region on the list", rule="region")
    return region


def declared_profile(
    data: Mapping[str, Any], *, works_in: str
) -> tuple[dict[str, Any], list[Credential]]:
    """The profile an application declares, its fields checked, and its certificates; the
    regions default to where the applicant works."""
    level = choice(data, "degree_level", DEGREE_LEVELS, "none")
    regions = data.get("regions") or [works_in]
    if not isinstance(regions, list) or not all(isinstance(r, str) for r in regions):
        raise InvalidInput("regions", "must be a list of regions", rule="region")
    declared = collect(
        {
            "degree_level": lambda: level,
            "degree_field": lambda: text(data, "degree_field", required=level != "none"),
            "degree_in_social_work": lambda: flag(data, "degree_in_social_work"),
            "years_in_social_field": lambda: whole_number(
                data, "years_in_social_field", minimum=0, maximum=70
            ),
            "topics": lambda: choices(data, "topics", TOPICS),
            "background": lambda: text(data, "background", multiline=True),
            "regions": lambda: [region({"regions": item}, "regions") for item in regions if item],
            "languages": lambda: choices(data, "languages", LANGUAGES),
            "formats": lambda: choices(data, "formats", FORMATS),
            "capacity": lambda: whole_number(data, "capacity", minimum=1, maximum=50, default=2),
            "fee_note": lambda: text(data, "fee_note", required=False, multiline=True),
        }
    )
    return declared, credentials(data)


def documents(data: Mapping[str, Any]) -> dict[str, Any]:
    documents = data.get("documents") or {}
    if not isinstance(documents, dict):
        raise InvalidInput("documents", "must name a document per qualification")
    return documents


def credentials(data: Mapping[str, Any]) -> list[Credential]:
    credentials = []
    items = data.get("credentials") or []
    if not isinstance(items, list):
        raise InvalidInput("credentials", "must be a list of certificates")
    for index, item in enumerate(items):
        key = f"credentials[{index}]"
        if not isinstance(item, dict):
            raise InvalidInput(key, "must give kind, issuer and year")
        kind = item.get("kind")
        if kind not in CREDENTIAL_KINDS:
            raise InvalidInput(f"{key}.kind", f"must be one of {', '.join(CREDENTIAL_KINDS)}")
        valid_until = item.get("valid_until")
        try:
            until = date.fromisoformat(valid_until) if valid_until else None
        except ValueError:
            raise InvalidInput(
                f"{key}.valid_until", "must be a date like 2028-12-31", rule="date"
            ) from None
        try:
            issuer, year = (
                text(item, "issuer"),
                whole_number(item, "year", minimum=1950, maximum=2100),
            )
        except InvalidInput as error:  # named as the form and the API know the field
            raise InvalidInput(
                f"{key}.{error.field}", error.message, rule=error.rule, params=error.params
            ) from None
        credentials.append(Credential(kind=kind, issuer=issuer, year=year, valid_until=until))
    return credentials
