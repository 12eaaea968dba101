"""The bodies the staff API takes, every field typed and bounded, as /openapi.json shows them.

A step's values are checked field by field against what its workflow file declares
(lifecycle/workflows/stepdata.py), which only the case's workflow knows. Here each value is
held to what some declared field could take — text, a whole number, true or false, a list of
addresses — so that nothing nested, and no other JSON type, reaches the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from lifecycle.errors import InvalidInput
from lifecycle.workflows.stepdata import INT_MAX, MAX_ADDRESS, MAX_ITEMS, MAX_TEXT

# More than any step declares; unknown fields are refused by the step, naming them.
MAX_STEP_FIELDS = 20
FIELD_NAME_LENGTH = 40
TRIGGER_LENGTH = 40  # as the audit trail keeps a trigger


@dataclass(frozen=True)
class AtMost:
    """Text of at most `limit` characters, counted on the Python string. Pydantic's own
    max_length reads the text as UTF-8 first and fails on a lone surrogate, which
    `text_only` names by its field instead."""

    limit: int

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {**handler(schema), "maxLength": self.limit}

    def _check(self, text: str) -> str:
        if len(text) > self.limit:
            raise PydanticCustomError(
                "string_too_long", "must be at most {limit} characters", {"limit": self.limit}
            )
        return text


def _one_problem(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One problem named per value, not one for each JSON type the value is not."""
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, str):
            message = f"must be at most {MAX_TEXT} characters"
        elif isinstance(value, int) and not isinstance(value, bool):
            message = f"must be a whole number from {-INT_MAX} to {INT_MAX}"
        elif isinstance(value, list):
            message = (
                f"must be a list of at most {MAX_ITEMS} email addresses, each as text of at "
                f"most {MAX_ADDRESS} characters"
            )
        else:
            message = "must be text, a whole number, true or false, or a list of email addresses"
        raise PydanticCustomError("step_value", message) from None


StepValue = Annotated[
    StrictBool
    | Annotated[StrictInt, Field(ge=-INT_MAX, le=INT_MAX)]
    | Annotated[StrictStr, AtMost(MAX_TEXT)]
    | Annotated[list[Annotated[StrictStr, AtMost(MAX_ADDRESS)]], Field(max_length=MAX_ITEMS)]
    | None,
    WrapValidator(_one_problem),
]


class Advance(BaseModel):
    """One step on a case, with the data the step takes."""

    model_config = ConfigDict(extra="forbid")

    trigger: Annotated[
        str,
        AtMost(TRIGGER_LENGTH),
        Field(
            description="the step, e.g. begin_review; GET /api/v1/cases/{ref} lists those "
            "the case's state allows",
        ),
    ]
    values: Annotated[
        dict[Annotated[str, AtMost(FIELD_NAME_LENGTH)], StepValue],
        Field(
            max_length=MAX_STEP_FIELDS,
            description="the step's fields, as GET /api/v1/cases/{ref} lists them for each "
            "next step: text, a whole number, true or false, a date (2026-03-01) or a date and "
            "time (2026-03-01T14:00) as text, or a list of email addresses",
        ),
    ] = {}
    override_reason: Annotated[
        str,
        AtMost(MAX_TEXT),
        Field(
            description="the written reason for overriding a rule that may be overridden",
        ),
    ] = ""
    expected_version: Annotated[
        StrictInt | None,
        Field(
            ge=1,
            le=INT_MAX,
            description="refuse with 409 unless the case is still at this version",
        ),
    ] = None


# -- shared by the staff API and the public one -----------------------------------------------


class Refusal(BaseModel):
    rule: str = Field(description="the rule that refused, e.g. different_organisation")
    reason: str


class FieldProblem(BaseModel):
    field: str = Field(description="the field that is wrong, e.g. email or credentials[0].year")
    reason: str


def text_only(value: Any, field: str = "body") -> None:
    """Refuse what JSON can spell but no text column stores: lone UTF-16 surrogates (as
    "\\udcff") and NUL. Neither is echoed back: a surrogate cannot even be encoded."""
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidInput(field, "must not contain NUL characters")
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidInput(field, "is not valid Unicode text (a lone surrogate)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            text_only(key, f"a field name in {field}")
            text_only(item, key if field == "body" else f"{field}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            text_only(item, f"{field}[{index}]")
