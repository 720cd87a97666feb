"""Expected failures: each has a stable code and an HTTP status, rendered in one JSON shape."""

from __future__ import annotations

import math
from typing import Any


class ChatError(Exception):
    """A failure the client caused or must handle; never carries a traceback to the client."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        """The contract's error shape: {"error": {"code", "message", "field"?}}."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


class ValidationFailed(ChatError):
    code = "validation_failed"
    status = 400


class BadRequest(ChatError):
    code = "bad_request"
    status = 400


class Unauthorized(ChatError):
    code = "unauthorized"
    status = 401


class InvalidCredentials(ChatError):
    code = "invalid_credentials"
    status = 401


class Forbidden(ChatError):
    code = "forbidden"
    status = 403


class Blocked(ChatError):
    code = "blocked"
    status = 403


class NotFound(ChatError):
    code = "not_found"
    status = 404


class MethodNotAllowed(ChatError):
    code = "method_not_allowed"
    status = 405


class Conflict(ChatError):
    code = "conflict"
    status = 409


class LengthRequired(ChatError):
    code = "length_required"
    status = 411


class TooLarge(ChatError):
    code = "too_large"
    status = 413


class RangeNotSatisfiable(ChatError):
    code = "range_not_satisfiable"
    status = 416

    def __init__(self, size: int) -> None:
        super().__init__(f"The range is outside the file ({size} bytes).")
        self.size = size


class RateLimited(ChatError):
    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after_secs: float) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs

    @property
    def retry_after(self) -> int:
        """The wait in whole seconds, at least 1: HTTP's Retry-After, the error's field."""
        return max(1, math.ceil(self.retry_after_secs))

    def to_dict(self) -> dict[str, Any]:
        """The error shape plus retry_after (seconds): over WebSocket there is no header."""
        body = super().to_dict()
        body["error"]["retry_after"] = self.retry_after
        return body


class DatabaseUnavailable(ChatError):
    code = "database_unavailable"
    status = 503
