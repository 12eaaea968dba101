"""The errors a caller can show a person: each says what went wrong and changes nothing."""


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
    """A field has a value that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
