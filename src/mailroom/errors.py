"""The exception tree services raise, and its one mapping to HTTP.

Services never raise HTTP errors: they raise these, and the app turns them into a status and the
`{"code", "message"}` body. Every message names the field it is about when there is one.
"""

from __future__ import annotations


class MailroomError(Exception):
    status = 500
    code = "InternalError"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)

    @property
    def message(self) -> str:
        return str(self)


class BadRequest(MailroomError):
    status = 400
    code = "BadRequest"


class Unauthorized(MailroomError):
    status = 401
    code = "Unauthorized"


class Forbidden(MailroomError):
    status = 403
    code = "Forbidden"


class NotFound(MailroomError):
    status = 404
    code = "ResourceNotFound"


class Conflict(MailroomError):
    status = 409
    code = "Conflict"


class PayloadTooLarge(MailroomError):
    status = 413
    code = "PayloadTooLarge"


class TooManyRequests(MailroomError):
    """The caller has done this too often lately; the message says when it can be done again."""

    status = 429
    code = "TooManyRequests"


class BadGateway(MailroomError):
    """A provider the request depends on could not be reached or failed; nothing was changed."""

    status = 502
    code = "BadGateway"
