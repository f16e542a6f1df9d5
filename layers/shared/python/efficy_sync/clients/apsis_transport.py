"""APSIS One's authentication and transport, under the API calls of `ApsisClient` (clients/apsis.py).

Kept apart so each can change alone: authentication (`_access_token`, `_fetch_token`: the OAuth client credentials
token, cached until close to its expiry), transport (`_call`, `_send`: one retrying session from clients/http.py, one
token refresh on 401/403) and parsing (`_error_for`, `_items`: APSIS's answers as the typed errors of
clients/errors.py). Safe to share between threads (the token is kept under a lock; the Session makes independent calls).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import requests

from efficy_sync.clients.apsis_answers import problem_answer
from efficy_sync.clients.errors import (
    ApiError,
    ApsisUnavailable,
    AuthError,
    NotFound,
    PayloadTooLarge,
    RejectedValue,
    RequestRefused,
    error_class_for,
)
from efficy_sync.clients.http import (
    MIN_CALL_SECONDS,
    RetryPolicy,
    build_session,
    check_time,
    response_unanswered_attempt,
    time_left,
)
from efficy_sync.clients.list_pages import MORE_PAGES as MORE_PAGES  # re-exported
from efficy_sync.clients.list_pages import says_more
from efficy_sync.clients.meter import meter
from efficy_sync.clients.token_hold import TokenHold
from efficy_sync.observability import logger  # the PII-scrubbing logger: one logging path
from efficy_sync.pii import redact_text

if TYPE_CHECKING:
    from collections.abc import Callable

JSON = "application/json"
ACCEPT = "application/json, application/problem+json"
MAX_BODY_BYTES = 100 * 1024  # documented request limit; checked here so a too-large body costs no call
FALLBACK_TOKEN_LIFETIME = 300.0  # when a token carries neither `exp` nor `expires_in`
#: a 403 gets a new token at most this often per client. APSIS answers 403 both for a token it no longer takes
#: and for an API client without permission for the endpoint (contracts/apsis-one.md); refreshing on every 403
#: of the second kind asked for a token per call (every tagged person, with a client not allowed to tag), and
#: the token endpoint allows 10 a minute per account: its 429s then stalled every call of the container.
FORBIDDEN_REFRESH_SECONDS = 60.0
#: a 401 to a token this client fetched less than this long ago gets a new one at most once in that time (fresh
#: tokens refused: the API does not take this client's tokens); an older token, or one from the store, is replaced
UNAUTHORIZED_REFRESH_SECONDS = 60.0
#: with a token store, one client of an API client asks APSIS for a new token at a time (the refresh lease); the
#: lease lapses after this long if its holder dies mid-fetch (a fetch backed off by 429s can take half a minute)
TOKEN_LEASE_SECONDS = 60.0
#: how long a client waits for the token the lease's holder is fetching before it asks APSIS itself
TOKEN_WAIT_SECONDS = 10.0


def _redact(text: str) -> str:
    """Error details can echo the value APSIS refused (the content of a problem+json `detail` is unspecified),
    and they are stored and shown (person state, run record, `explain`), not only logged: addresses and phone
    numbers are replaced whole, quoted values masked (pii.redact_text)."""
    return redact_text(text, hint=False)


def _jwt_expiry(token: str) -> float | None:
    """APSIS says to read the JWT `exp` claim (expires_in is deprecated). The signature is not ours to check."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _lifetime(expires_in: Any) -> float:
    """Seconds from a deprecated `expires_in`, read leniently ("3600", 3600.0, "3600s"): an unreadable or
    non-positive value takes FALLBACK_TOKEN_LIFETIME, so the token is fetched again early rather than the call
    failing (a too-short lifetime costs a token request, a too-long one a 401 and one refresh)."""
    text = str(expires_in).strip().lower().removesuffix("s").strip() if expires_in is not None else ""
    try:
        seconds = float(text)
    except ValueError:
        return FALLBACK_TOKEN_LIFETIME
    return seconds if 0 < seconds < float("inf") else FALLBACK_TOKEN_LIFETIME


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # epoch seconds
    fetched_at: float | None = None  # when this client got it from APSIS itself (None: read from the store)


class TokenStore(Protocol):
    """Where a client's token is shared beyond the client: APSIS allows 10 token requests a minute per account
    and a token lives a day, so every container and CLI run of an API client should use the same one
    (efficy_sync/apsis_tokens.py keeps it in SSM). The value is a credential: a store never logs it."""

    def load(self) -> tuple[str, float] | None:
        """(token, refresh_at in epoch seconds) last saved, or None."""
        ...

    def save(self, token: str, refresh_at: float) -> None: ...

    def discard(self, token: str) -> None:
        """APSIS refused `token`: forget it, unless another client has saved a newer one meanwhile."""
        ...

    def claim(self, seconds: float) -> bool:
        """Takes the refresh lease for `seconds`: True when this client may ask APSIS for a token, False while
        another client holds a lease that has not lapsed."""
        ...

    def release(self) -> None:
        """Gives back a lease `claim` took (a lapsed one another client took since is left alone)."""
        ...


class ApsisTransport:
    """Authenticated, retried, typed HTTP calls to one APSIS One account (one set of client credentials)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        policy: RetryPolicy | None = None,
        token_refresh_margin: float = 3600,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.time,
        token_store: TokenStore | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy or RetryPolicy()
        self.token_refresh_margin = token_refresh_margin
        self._clock = clock  # epoch seconds, for the token's expiry; a test passes its own instead of sleeping
        self._client_id = client_id
        self._client_secret = client_secret
        self._session = session or build_session(self.policy, api="apsis")
        self._token: _Token | None = None
        self._token_lock = threading.Lock()
        self._token_store = token_store
        self._forbidden: tuple[float, str] | None = None  # when a 403 last got a new token, and the token refused
        self._refused: str | None = None  # the token APSIS refused last: never read back from the store
        self._unauthorized_refresh_at: float | None = None  # when a 401 to a fresh token last got a new one
        self.token_hold = TokenHold(clock)  # a refused token request is held, by every container (token_hold.py)
        self._calls_lock = threading.Lock()
        #: HTTP calls made, by kind ("patch_attributes", "token", ...); the session's own retries are not
        #: counted here (the simulator's /_sim/calls sees those)
        self.calls: Counter[str] = Counter()

    # ---- authentication -------------------------------------------------------------------------------
    def _access_token(self) -> str:
        """The cached token, fetched again once it is within the refresh margin of its expiry. With a token
        store, a token another client saved is used before a new one is asked for, and a new one is saved.
        A valid token is read without the lock (every call asks; a _Token is replaced whole, never changed)."""
        held = self._token
        if held is not None and self._clock() < held.refresh_at:
            return held.value
        with self._token_lock:
            if self._token is None or self._clock() >= self._token.refresh_at:
                self._token = self._shared_token() or self.token_hold.fetch(self._refresh_shared)
            return self._token.value

    def _forget_token(self, used: str) -> None:
        with self._token_lock:
            if self._token is not None and self._token.value == used:
                self._token = None
            self._refused = used  # a store that fails to discard it must not hand it back (_shared_token)
            self._store("discard", used)

    def _may_refresh_on_unauthorized(self, used: str) -> bool:
        """Whether a 401 to `used` is worth a new token. A token read from the store or fetched a while ago is
        replaced (revoked, expired early); one replaced meanwhile by another thread is retried with the current
        one, no fetch. But a token this client fetched from APSIS less than UNAUTHORIZED_REFRESH_SECONDS ago
        gets a new one at most once in that time: fresh tokens refused say the API does not take this client's
        tokens at all (another account, a gateway), and asking again on every call spent the token endpoint's
        10 a minute per account at the first worker batch, for every container of the account."""
        with self._token_lock:
            current, now = self._token, self._clock()
            if current is None or current.value != used or current.fetched_at is None:
                return True
            if not 0 <= now - current.fetched_at < UNAUTHORIZED_REFRESH_SECONDS:
                return True
            last = self._unauthorized_refresh_at
            if last is not None and 0 <= now - last < UNAUTHORIZED_REFRESH_SECONDS:
                return False
            self._unauthorized_refresh_at = now
            return True

    def _may_refresh_on_forbidden(self, used: str) -> bool:
        """Calls in flight with a token a 403 replaced (threads refused together) try the current one."""
        with self._token_lock:
            now, last, current = self._clock(), self._forbidden, self._token
            if (last is not None and used == last[1]) or (current is not None and current.value != used):
                return True
            if last is not None and 0 <= now - last[0] < FORBIDDEN_REFRESH_SECONDS:
                return False  # a token this recent was refused too: the 403 is about permission, not the token
            self._forbidden = (now, used)
            return True

    def _shared_token(self) -> _Token | None:
        found = self._store("load")
        if not found:
            return None
        value, refresh_at = found
        if value == self._refused:  # refused by APSIS, still stored (its discard failed): ask for a new one
            return None
        return _Token(value=value, refresh_at=refresh_at) if self._clock() < refresh_at else None

    def _refresh_shared(self) -> _Token:
        """A new token, asked for by one client of the API client at a time; the others wait for it.

        Why: the clients share one token, so they all reach its refresh time (or its 401) together, and a full
        sync's pages start together; each asking APSIS (10 token requests a minute per account) sent the
        eleventh into 429 back-off for up to half a minute. A client that cannot take the lease waits up to
        TOKEN_WAIT_SECONDS for the holder's token, then asks for one of its own (a holder that died, a store
        that fails: as without a store, never worse)."""
        claimed = self._store("claim", TOKEN_LEASE_SECONDS)
        if claimed is False:
            shared = self._wait_for_shared()
            if shared is not None:
                return shared
            self.token_hold.check_shared()  # the holder's request brought no token: refused, if it recorded so
        try:
            return self._fetch_and_share()
        finally:
            if claimed:
                self._store("release")

    def _wait_for_shared(self) -> _Token | None:
        """The token another client is fetching, read from the store at growing intervals (a fetch takes well
        under a second; SSM's read rate is shared by the account), or None after TOKEN_WAIT_SECONDS, or sooner
        when the invocation's deadline would leave too little time for the call itself."""
        left = time_left()
        wait = TOKEN_WAIT_SECONDS if left is None else min(TOKEN_WAIT_SECONDS, left - 2 * MIN_CALL_SECONDS)
        deadline, pause = time.monotonic() + wait, 0.25
        while time.monotonic() + pause < deadline:
            time.sleep(pause)
            shared = self._shared_token()
            if shared is not None:
                return shared
            pause = min(pause * 1.5, 2.0)
        return None

    def _fetch_and_share(self) -> _Token:
        token = self._fetch_token()
        self._store("save", token.value, token.refresh_at)
        return token

    def _store(self, action: str, *args: Any) -> Any:
        """One call to the token store; a failing store (no permission, throttled) costs a token request, never
        the call: the client goes on with a token of its own."""
        if self._token_store is None:
            return None
        try:
            return getattr(self._token_store, action)(*args)
        except Exception as exc:  # the store is an optimisation of the token's reuse, not part of the call
            logger.warning(
                "APSIS token store: %s failed (%s); using a token of this client's own", action, type(exc).__name__
            )
            return None

    def _fetch_token(self) -> _Token:
        """POST /oauth/token with a JSON body (APSIS refuses forms). 429 is backed off by the session."""
        body = {"grant_type": "client_credentials", "client_id": self._client_id, "client_secret": self._client_secret}
        response = self._send("token", "POST", "/oauth/token", self._encode(body), JSON, None, token=None)
        status = response.status_code
        if 400 <= status < 500 and status not in (408, 410, 423, 429):
            # a token refused is never about a person (a RejectedValue here was acknowledged as the person's
            # failure, and an opt-out with it): the credentials, the account or something in front of APSIS
            raise AuthError(f"APSIS token: {self._describe(response)}", status=status)
        if not 200 <= status < 300:  # 200 documented; 201 is among APSIS's success codes too (contract §5)
            raise self._error_for(response, "token")
        return self._token_from(self._object(response, "token"), issued_at=self._clock(), status=response.status_code)

    def _token_from(self, payload: Any, issued_at: float, *, status: int = 200) -> _Token:
        """A 200 that carries no token (a proxy's HTML page, an answer of another shape) is the integration's
        failure, typed as an outage so every caller retries it and no person's change is acknowledged; an
        untyped KeyError here failed full-sync pages without Step Functions' retry."""
        value = payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(value, str) or not value.strip():
            message = "APSIS token: the answer carries no access_token"
            raise ApsisUnavailable(message, status=status, detail=message)
        expires_at = _jwt_expiry(value)
        if expires_at is None or expires_at <= issued_at:  # past on arrival: our clock is ahead, not the token dead
            expires_at = issued_at + _lifetime(payload.get("expires_in"))
        # a short-lived token (tests, odd configurations) is still reused for half its life
        margin = min(self.token_refresh_margin, max(expires_at - issued_at, 0) / 2)
        return _Token(value=value, refresh_at=expires_at - margin, fetched_at=issued_at)

    # ---- transport ------------------------------------------------------------------------------------
    def _call(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        content_type: str = JSON,
        params: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One API call: authenticated, retried by the session, one token refresh on 401 (a fresh token's or a
        403's at most once a minute), typed on failure. `stream`: a 2xx body is read by the caller as it arrives."""
        data = self._encode(body) if body is not None else None
        token = self._access_token()
        response = self._send(kind, method, path, data, content_type, params, token=token, stream=stream)
        status = response.status_code
        if (status == 401 and self._may_refresh_on_unauthorized(token)) or (
            status == 403 and self._may_refresh_on_forbidden(token)
        ):
            self._forget_token(token)
            token = self._access_token()
            response = self._send(kind, method, path, data, content_type, params, token=token, stream=stream)
        if response.status_code >= 400:
            error = self._error_for(response, kind)
            error.maybe_applied = response_unanswered_attempt(response)  # a 429 after a timed-out attempt
            raise error
        if response.headers.get("Content-Type", "").lower().startswith("text/html"):
            # APSIS's API answers JSON or nothing; a web page answered 2xx is a proxy's or a maintenance page,
            # and a write "done" on it would be recorded as sent (an opt-out APSIS never got)
            message = f"APSIS {kind}: {response.status_code} answer is a web page, not the API's"
            raise ApsisUnavailable(message, status=response.status_code, detail=message)
        return response

    def _send(
        self,
        kind: str,
        method: str,
        path: str,
        data: bytes | None,
        content_type: str,
        params: dict[str, Any] | None,
        *,
        token: str | None,
        stream: bool = False,
    ) -> requests.Response:
        """One HTTP exchange (the session retries 429/5xx/timeouts inside it). Bytes bodies carry Content-Length."""
        headers = {"Accept": ACCEPT}
        if data is not None:
            headers["Content-Type"] = content_type
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        left = check_time(f"APSIS {kind}")
        self._count(kind)
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                data=data,
                params=params,
                headers=headers,
                timeout=self.policy.timeout_within(left),
                stream=stream,
            )
        except requests.RequestException as exc:
            meter.record_unanswered("apsis", self.policy.total + 1)
            raise ApsisUnavailable(f"APSIS {kind}: {type(exc).__name__} after retries") from exc
        meter.record("apsis", response)
        return response

    @staticmethod
    def _encode(body: dict[str, Any]) -> bytes:
        data = json.dumps(body, separators=(",", ":")).encode()
        if len(data) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body of {len(data)} bytes exceeds APSIS's {MAX_BODY_BYTES}")
        return data

    def _count(self, kind: str) -> None:
        with self._calls_lock:
            self.calls[kind] += 1

    # ---- parsing --------------------------------------------------------------------------------------

    @staticmethod
    def _object(response: requests.Response, kind: str) -> dict[str, Any]:
        """A 2xx answer's JSON object. Anything else (a proxy's HTML page, a list, a truncated body) is not read
        as "nothing": it is an outage of the integration, retried, never a person's failure (errors.py)."""
        try:
            payload = json.loads(response.content.decode("utf-8-sig"))  # a byte-order mark first is still JSON
        except (ValueError, UnicodeDecodeError):
            payload = None
        if not isinstance(payload, dict):
            message = f"APSIS {kind}: {response.status_code} answer is not a JSON object"
            raise ApsisUnavailable(message, status=response.status_code, detail=message)
        return payload

    def _items(
        self, kind: str, path: str, *, params: dict[str, Any] | None = None, whole: bool = False
    ) -> list[dict[str, Any]]:
        """The `items` of a list answer; an answer without a readable list is unreadable (an empty list would
        read as "the profile holds no consents", "the section has no such tag"), and so, with `whole`, is one
        that says there is more (paging is not documented: one page is not the whole list)."""
        response = self._call(kind, "GET", path, params=params)
        payload = self._object(response, kind)
        items = payload.get("items")
        if whole and says_more(payload, len(items) if isinstance(items, list) else 0):
            message = f"APSIS {kind}: the answer is one page of several; not read as the whole list"
            raise ApsisUnavailable(message, status=response.status_code, detail=message)
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            message = f"APSIS {kind}: {response.status_code} answer's items are not a list of objects"
            raise ApsisUnavailable(message, status=response.status_code, detail=message)
        return items

    @staticmethod
    def _describe(response: requests.Response) -> str:
        """Status, title and detail of a problem+json body; a short excerpt of anything else (S3 XML, HTML)."""
        try:
            problem = response.json()
        except ValueError:
            problem = None
        if isinstance(problem, dict):
            text = f"{problem.get('title', '')}: {problem.get('detail', '')}".strip(": ")
        else:  # not JSON, or JSON that is not a problem object (a list, a string): an excerpt, typed as the status
            text = response.text[:200]
        return f"{response.status_code} {_redact(text)}".strip()

    def _error_for(self, response: requests.Response, kind: str) -> ApiError:
        status = response.status_code
        message = f"APSIS {kind}: {self._describe(response)}"
        error = error_class_for(status, ApsisUnavailable)(message, status=status, detail=message)
        if isinstance(error, NotFound):
            error.answered = problem_answer(response)
        elif isinstance(error, RejectedValue) and not problem_answer(response):
            # only APSIS's own problem+json refuses a person's value: a proxy's or a WAF's 400 page (a header
            # too large, a blocked body) is about the integration, and acknowledging it lost the change
            return RequestRefused(message, status=status, detail=message)
        return error
