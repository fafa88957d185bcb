"""The error every service raises when a request cannot be carried out.

Messages are written for people: the API returns them as JSON, the admin as a message.
"""

from django.core.exceptions import ValidationError


class ApplicationError(Exception):
    status_code = 400
    code = "invalid"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None, **extra):
        super().__init__(message)
        self.message = message
        self.fields = fields or {}
        self.extra = extra


class NotFound(ApplicationError):
    status_code = 404
    code = "not_found"


class Conflict(ApplicationError):
    """The request is well formed but the current state does not allow it."""

    status_code = 409
    code = "conflict"


def first_line(error: BaseException) -> str:
    """An error as an operator reads it: the database's first line, without its context; a
    validation error's messages, not the list they are kept in."""
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    if isinstance(error.__cause__ or error.__context__, ValidationError):  # the admin's IncorrectLookupParameters
        return first_line(error.__cause__ or error.__context__)
    text = str(error)
    return text.splitlines()[0] if text else error.__class__.__name__
