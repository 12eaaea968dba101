"""The errors a caller can show a person: each says what went wrong and changes nothing."""

from __future__ import annotations


class MentorlusError(Exception):
    """Base of every refusal the service explains to its caller."""


class Refused(MentorlusError):
    """A step is not allowed: wrong state, role, missing data or a rule (`rule` names it)."""

    def __init__(self, reason: str, *, rule: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


class Conflict(MentorlusError):
    """Someone else changed the case since the caller read it."""


class NotFound(MentorlusError):
    """No such case, person or record."""


class InvalidInput(MentorlusError):
    """A field has a value that cannot be used; `field` names it, `rule` and `params` say
    which rule refused it (for the reader's language), `message` says it in English.

    `problems` holds every field refused at once, in the order of the form: this one first.
    """

    def __init__(
        self,
        field: str,
        message: str,
        *,
        rule: str = "invalid",
        params: dict[str, int] | None = None,
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.rule = rule
        self.params = params or {}
        self.problems: list[InvalidInput] = [self]

    @classmethod
    def all_of(cls, found: list[InvalidInput]) -> InvalidInput:
        """One refusal carrying every problem found, the first one in front."""
        problems = [problem for error in found for problem in error.problems]
        first = problems[0]
        error = cls(first.field, first.message, rule=first.rule, params=first.params)
        error.problems = problems
        return error
