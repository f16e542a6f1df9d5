"""One place for HTTP behaviour both clients share: sessions, timeouts, retries with backoff and jitter, and the
invocation's deadline.

urllib3's Retry does the waiting (exponential backoff, jitter, Retry-After), so the clients only map the
final response to a typed error. POST is retried too: every call we make is safe to repeat (JSON-RPC reads,
idempotent consent/attribute writes, profile creation that answers 409 when it already exists).

Two bounds keep a Lambda from sleeping past its own timeout (and having its whole batch redelivered):
- each wait is capped: a `Retry-After` of an hour waits `RetryPolicy.retry_after_max` seconds at most;
- a deadline (set by the handler from Lambda's remaining time less a reserve, see `deadline`) is checked
  before every call and every wait: a call or retry that would start too late raises `OutOfTime` instead, so
  the batch reports what it could not do and those messages stay retryable. Timeouts shrink to fit it; the
  reserve covers the last attempt.
"""

from __future__ import annotations

import contextvars
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, InvalidHeader, NewConnectionError
from urllib3.util.retry import Retry

from . import spans
from .errors import OutOfTime

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
#: a call is not started with less time than this left before the deadline
MIN_CALL_SECONDS = 1.0

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("efficy_sync_deadline", default=None)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a client tries before it gives up and raises a TransientError."""

    total: int = 5
    backoff_factor: float = 0.5  # 0.5, 1, 2, 4 ... seconds
    backoff_max: float = 30.0
    backoff_jitter: float = 0.25
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: longest single wait a `Retry-After` header may ask for (urllib3 alone would sleep whatever it says)
    retry_after_max: float = 30.0

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)

    def timeout_within(self, left: float | None) -> tuple[float, float]:
        """The timeouts of one attempt, shrunk so the attempt ends before the deadline."""
        if left is None:
            return self.timeout
        budget = max(left, 0.1)
        return (min(self.connect_timeout, budget), min(self.read_timeout, budget))


# ---- deadline -------------------------------------------------------------------------------------------------
def time_left() -> float | None:
    """Seconds before the current deadline, or None when no deadline is set (the CLI, tests)."""
    at = _deadline.get()
    return None if at is None else at - time.monotonic()


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Calls made inside (in this thread, or through `map_in_context`) must end within `seconds`."""
    token = _deadline.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _deadline.reset(token)


def lambda_seconds(context: Any, reserve: float) -> float | None:
    """What a handler may spend on calls: Lambda's remaining time less `reserve` (to report and log)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    return max(0.0, float(remaining()) / 1000.0 - reserve)


def check_time(what: str) -> float | None:
    """Raises OutOfTime when too little time is left to start `what`; returns the seconds left (or None)."""
    left = time_left()
    if left is not None and left < MIN_CALL_SECONDS:
        raise OutOfTime(f"{what}: not started, {max(left, 0):.1f}s left before the invocation's deadline")
    return left


def map_in_context(pool: Executor, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """`pool.map` that carries the caller's deadline into the worker threads (contextvars are per thread)."""
    futures = [pool.submit(contextvars.copy_context().run, fn, item) for item in items]
    return (future.result() for future in futures)


# ---- retries --------------------------------------------------------------------------------------------------
#: Retry-After in seconds, whole or decimal, optionally followed by a unit word
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:s|secs?|seconds?)?\s*$", re.IGNORECASE)


def unanswered_attempt(history: Iterable[Any]) -> bool:
    """Whether a retried call had an attempt that was sent and got no answer (urllib3's retry history): a read
    timeout or a connection dropped after sending may have been applied by the server. A connection that was
    never made (refused, a connect timeout, a name not resolved) sent nothing."""
    return any(
        entry.error is not None and not isinstance(entry.error, ConnectTimeoutError | NewConnectionError)
        for entry in history
    )


def response_unanswered_attempt(response: Any) -> bool:
    """`unanswered_attempt` of the attempts before `response` (a requests Response, as the session returns
    the last one when the retries of a status ran out)."""
    retries = getattr(getattr(response, "raw", None), "retries", None)
    return unanswered_attempt(getattr(retries, "history", ()) or ())


class BoundedRetry(Retry):
    """urllib3's Retry with each wait capped and no wait (nor attempt after it) running past the deadline."""

    retry_after_cap: float = 30.0

    def new(self, **kw: Any) -> BoundedRetry:
        retry = super().new(**kw)
        retry.retry_after_cap = self.retry_after_cap
        return retry

    def get_retry_after(self, response: Any) -> float | None:
        """Retry-After as seconds, read beyond the RFC's whole number: "1.5" and "2 seconds" are waited as said,
        and a value nobody can read falls back to our own backoff. urllib3 raised InvalidHeader for both, which
        failed the call at once with no wait at all (a 429 on an import slot then sent the file per person)."""
        value = response.headers.get("Retry-After")
        if value is None:
            return None
        match = _SECONDS.match(value)
        if match:
            return min(float(match.group(1)), float(self.retry_after_max))
        try:
            return super().parse_retry_after(value)  # an HTTP date
        except InvalidHeader:
            return None

    def _wait(self, response: Any) -> float:
        if self.respect_retry_after_header and response is not None:
            retry_after = self.get_retry_after(response)
            if retry_after:
                return min(retry_after, self.retry_after_cap)
        return max(0.0, self.get_backoff_time())

    def sleep(self, response: Any = None) -> None:
        wait = self._wait(response)
        left = time_left()
        if left is not None and wait + MIN_CALL_SECONDS > left:
            error = OutOfTime(f"a retry after {wait:.1f}s would end past the invocation's deadline ({left:.1f}s left)")
            error.maybe_applied = unanswered_attempt(self.history)
            raise error
        if wait > 0:
            time.sleep(wait)


class TracedAdapter(HTTPAdapter):
    """HTTPAdapter that puts each call (urllib3's retries included) in a trace subsegment named after the API,
    when `spans.call_span` is set. Only the method, the final status and the attempts are recorded: never the URL
    (APSIS paths hold the person key, a query may hold a token) nor a body."""

    def __init__(self, api: str, **kwargs: Any) -> None:
        self.api = api
        super().__init__(**kwargs)

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        span = spans.call_span
        if span is None:
            return super().send(request, *args, **kwargs)
        with span(self.api, str(request.method)) as info:
            try:
                response = super().send(request, *args, **kwargs)
            except Exception as exc:
                info["error"] = type(exc).__name__
                raise
            history = getattr(getattr(getattr(response, "raw", None), "retries", None), "history", None) or ()
            info.update(status=response.status_code, attempts=len(history) + 1)
            return response


def build_session(policy: RetryPolicy, *, pool_size: int = 16, api: str = "http") -> requests.Session:
    """A Session whose adapter retries 429/5xx, connection errors and read timeouts, within the bounds above;
    `api` ("apsis", "efficy") names its calls' trace subsegments."""
    retry = BoundedRetry(
        total=policy.total,
        connect=policy.total,
        read=policy.total,
        status=policy.total,
        backoff_factor=policy.backoff_factor,
        backoff_max=policy.backoff_max,
        backoff_jitter=policy.backoff_jitter,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # retry POST/PATCH as well: see module docstring
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last response so the client can type the error
    )
    retry.retry_after_cap = policy.retry_after_max
    session = requests.Session()
    adapter = TracedAdapter(api, max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    _read_environment_once(session)
    return session


def _read_environment_once(session: requests.Session) -> None:
    """With `trust_env` on, requests reads the environment again on every call: it walks os.environ for proxy
    variables and looks for a ~/.netrc, about a tenth of a full-sync page's CPU in a profile of the local stack
    (whose process holds every function's variables). Without a proxy variable (Lambda has none) nothing there
    can change a call, so it is read once, here. A ~/.netrc is never wanted: it would replace our own
    Authorization header with Basic credentials. With a proxy variable set, requests keeps reading it per call
    (NO_PROXY is per host)."""
    import urllib.request

    if any(scheme != "no" for scheme in urllib.request.getproxies()):  # NO_PROXY alone routes nothing
        return
    session.trust_env = False
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle  # what requests itself takes from the environment when verify is left True
