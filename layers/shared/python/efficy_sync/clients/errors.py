"""Typed API errors.

Workers decide what to do from the class alone: retry later (transient), record on the person and stop
retrying (rejected), or fix configuration (auth). Step Functions matches the class name in ErrorEquals.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error an API client raises."""

    #: a short, stable label used in metrics, health reports and the person's last outcome
    category = "api_error"
    retryable = False

    def __init__(self, message: str, *, status: int | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class TransientError(ApiError):
    """A failure that retrying later can fix (5xx, timeouts, connection resets) after in-call retries ran out."""

    category = "unavailable"
    retryable = True


class RateLimited(TransientError):
    """429 after the in-call retries ran out."""

    category = "rate_limit"


class AuthError(ApiError):
    """401/403 that a fresh token or key did not fix: a configuration problem."""

    category = "permission"


class NotFound(ApiError):
    category = "not_found"


class Conflict(ApiError):
    category = "conflict"


class RejectedValue(ApiError):
    """4xx that retrying cannot fix (a value the API refuses): recorded on the person, not retried for ever."""

    category = "rejected_value"


class PayloadTooLarge(RejectedValue):
    category = "payload_too_large"


class EfficyBusinessError(ApiError):
    """Efficy answers HTTP 200 with an exception object for business errors."""

    category = "efficy_error"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = 200) -> None:
        super().__init__(message, status=status)
        self.code = code


class EfficyUnavailable(TransientError):
    """Efficy's front proxy answered 5xx (often 504 with an HTML page) or timed out."""

    category = "efficy_unavailable"


class ApsisUnavailable(TransientError):
    category = "apsis_unavailable"
