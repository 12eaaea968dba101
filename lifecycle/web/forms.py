"""The application form, which the public page and the console's "on someone's behalf" share:
its values as typed, the application they describe, and what it offers to choose from."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from starlette.datastructures import FormData

from lifecycle.store.models import CREDENTIAL_KINDS, DEGREE_LEVELS, FORMATS, LANGUAGES, REGIONS
from lifecycle.web.pages import language

# The form offers this many certificate rows; the API takes any number.
CREDENTIAL_ROWS = 3
# Form field part → the API's name for it.
CREDENTIAL_PARTS = {"kind": "kind", "issuer": "issuer", "year": "year", "valid": "valid_until"}
APPLICATION_TEXT_FIELDS = (
    "name",
    "email",
    "language",
    "organisation",
    "region",
    "degree_level",
    "degree_field",
    "years_in_social_field",
    "background",
    "capacity",
    "fee_note",
)


def application_values(form: FormData) -> dict[str, Any]:
    """The application form as typed: shown again unchanged when something is wrong."""
    values: dict[str, Any] = {key: str(form.get(key, "")) for key in APPLICATION_TEXT_FIELDS}
    for index in range(CREDENTIAL_ROWS):
        for part in CREDENTIAL_PARTS:
            key = f"credential_{part}_{index}"
            values[key] = str(form.get(key, ""))
    for key in ("topics", "languages", "formats", "regions"):
        values[key] = [str(v) for v in form.getlist(key)]
    values["degree_in_social_work"] = form.get("degree_in_social_work") == "on"
    values["notify_rounds"] = form.get("notify_rounds") == "on"
    return values


def application_data(values: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
    """The application the form's values describe, and which certificate rows it used."""
    data = {key: value for key, value in values.items() if not key.startswith("credential_")}
    rows = [  # the certificate rows with anything typed in them
        index
        for index in range(CREDENTIAL_ROWS)
        if any(values[f"credential_{part}_{index}"] for part in CREDENTIAL_PARTS)
    ]
    data["credentials"] = [
        {
            name: values[f"credential_{part}_{index}"] or None
            for part, name in CREDENTIAL_PARTS.items()
        }
        for index in rows
    ]
    return data, rows


def application_field(field: str, rows: list[int]) -> str:
    """The form field an error names: credentials[1].year → the year of the row it came from."""
    match = re.fullmatch(r"credentials\[(\d+)\]\.(\w+)", field)
    if match is None:
        return field
    parts = {name: part for part, name in CREDENTIAL_PARTS.items()}
    return f"credential_{parts.get(match[2], 'kind')}_{rows[int(match[1])]}"


def application_choices() -> dict[str, Any]:
    """What the application form offers to choose from."""
    return {
        "degree_levels": DEGREE_LEVELS,
        "credential_kinds": CREDENTIAL_KINDS,
        "credential_rows": CREDENTIAL_ROWS,
        "formats": FORMATS,
        "languages": LANGUAGES,
        "regions": REGIONS,
    }


def blank_application(request: Request) -> dict[str, Any]:
    return {
        "language": language(request),
        "capacity": "2",
        "languages": ["et"],
        "formats": ["in_person", "online"],
    }
