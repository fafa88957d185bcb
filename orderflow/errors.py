"""The error every service raises when a request cannot be carried out.

Messages are written for people: the API returns them as JSON, the admin as a message.
"""


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
