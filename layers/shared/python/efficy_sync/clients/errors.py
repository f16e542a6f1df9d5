"""Typed API errors.

Workers decide what to do from the class alone: retry later (transient), record on the person and stop
retrying (rejected), or fix configuration (auth). Step Functions matches the class name in ErrorEquals.

`about_person` is the one question a worker asks before it acknowledges a change it could not apply: only a
failure about this person's own data (a value APSIS refuses) may be recorded on the person and acknowledged.
Everything else (credentials, permissions, an unknown section, an outage, an answer we cannot read) is about
the integration: the change stays retryable and ends in the DLQ, where the alarm and `dlq redrive` find it.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base of every error an API client raises."""

    #: a short, stable label used in metrics, health reports and the person's last outcome
    category = "api_error"
    retryable = False
    #: True only for a failure caused by this person's data; see the module docstring
    about_person = False
    #: an earlier attempt of the call was sent and never answered (a read timeout, a connection dropped after
    #: sending), so the server may have applied it, whatever the last attempt said (a 429, our own deadline)
    maybe_applied = False

    def __init__(
        self, message: str, *, status: int | None = None, detail: str | None = None, about_person: bool | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        if about_person is not None:  # e.g. Efficy's 400 to a read is about our request, not about the person
            self.about_person = about_person


class TransientError(ApiError):
    """A failure that retrying later can fix (5xx, timeouts, connection resets) after in-call retries ran out."""

    category = "unavailable"
    retryable = True


class RacedWrite(TransientError):
    """Our calls went out, then our state write was refused: a newer sync stored the person meanwhile. APSIS may
    hold this older read's values (an opt-in) until the person is synced again from a fresh read; the real-time
    worker does that at once (worker.py), the queue's retry only if that one races too."""


class RateLimited(TransientError):
    """429 after the in-call retries ran out."""

    category = "rate_limit"


class AuthError(ApiError):
    """401/403 that a fresh token or key did not fix: a configuration problem."""

    category = "permission"


class NotFound(ApiError):
    """404. `answered` is False when the body was not the API's own answer (an HTML or XML page, an empty body):
    a proxy, a wrong base URL or path answers so too, which is no evidence that a profile does not exist."""

    category = "not_found"
    answered = True


class Conflict(ApiError):
    category = "conflict"


class RejectedValue(ApiError):
    """4xx that retrying cannot fix (a value the API refuses): recorded on the person, not retried for ever."""

    category = "rejected_value"
    about_person = True


class ConsentRefused(RejectedValue):
    """APSIS One refused a consent transition for this profile (409 while it holds another type, e.g. a pending
    double opt-in): the person's failure, recorded and shown; the consent is not recorded as sent."""

    category = "consent_refused"


class PayloadTooLarge(RejectedValue):
    category = "payload_too_large"


class MappingGone(ApiError):
    """APSIS One refused a write and its own definitions list (a documented read) shows that the section no
    longer has something the integration maps: an attribute, a subscription (topic) or a tag. Every person
    would be refused alike, so this is the integration's failure, not the person's: never recorded on the
    person nor acknowledged; the change is retried and ends in the DLQ (alarmed), a full sync fails."""

    category = "mapping"


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


class EfficyInconclusive(TransientError):
    """Efficy's reads disagree about whether a person exists (or the confirming read cannot be trusted): not
    evidence of a delete. Retried, then dead-lettered, never acted on."""

    category = "efficy_inconclusive"


class OutOfTime(TransientError):
    """The call would end after the invocation's deadline (Lambda's remaining time, less a reserve): it is not
    made, or not retried, so the batch can report in time; the change stays retryable."""

    category = "out_of_time"


#: the transient classes the state machine's Retry clauses name (Step Functions matches the exact class name, not
#: the hierarchy); a task raising another TransientError subclass re-raises it as TransientError (retry_as)
STATE_MACHINE_RETRIES = frozenset(
    {
        "TransientError",
        "EfficyUnavailable",
        "ApsisUnavailable",
        "RateLimited",
        "RacedWrite",
        "EfficyInconclusive",
        "OutOfTime",
    }
)


def retry_as(exc: TransientError) -> TransientError:
    """`exc` itself when the state machine retries its class by name, else a TransientError naming it."""
    if type(exc).__name__ in STATE_MACHINE_RETRIES:
        return exc
    return TransientError(f"{type(exc).__name__}: {exc}")


#: the statuses that say the server read our request and refused a value in it: only these can be about the
#: person's data (RejectedValue, recorded on the person and acknowledged)
VALUE_REFUSED = frozenset({400, 422})


class RequestRefused(ApiError):
    """A 4xx that says nothing about the person's data: 405 Method Not Allowed, 406, 415 Unsupported Media Type
    (a proxy, a WAF, a path setting such as `apsis.profile_tags_path` that is wrong for this account, a change
    of API). Every person would meet it alike, so it is the integration's failure: never acknowledged, the
    change is retried and ends in the DLQ, where the alarm and `dlq redrive` find it."""

    category = "request_refused"


def error_class_for(status: int, unavailable: type[ApiError]) -> type[ApiError]:
    """One reading of an HTTP error status for both APIs; `unavailable` names whose outage a 5xx is."""
    if status in (401, 403):
        return AuthError
    if status == 429:
        return RateLimited
    if status >= 500 or status in (408, 410, 423):
        # a timeout, a resource gone or locked for now (APSIS lists 408 and 410, its own client retries 408):
        # about the call, not the person's data, so never acknowledged as the person's failure
        return unavailable
    known = {404: NotFound, 409: Conflict, 413: PayloadTooLarge}
    if status in known:
        return known[status]
    # only a refused value is the person's failure; any other 4xx is about our request (RequestRefused)
    return RejectedValue if status in VALUE_REFUSED else RequestRefused


def acknowledgeable(exc: BaseException) -> bool:
    """True when a change that failed with `exc` may be recorded on the person and acknowledged."""
    return isinstance(exc, ApiError) and exc.about_person and not exc.retryable
