"""How often one APSIS client asks for a token again after APSIS refused to give it one.

APSIS allows 10 token requests a minute per account, every API client of the account together
(contracts/apsis-one.md section 1). A client whose token request was refused asked again on its next call:
refused credentials (400 `invalid_client`, 401: a revoked key, a rotated secret not stored yet) cost a token
request per change, ten per real-time batch and container; a 429 cost six per change (the session's retries).
Either way the account's limit was spent within seconds, and every other integration of the account (APSIS's
own included) got 429 for its tokens: the account locked out for as long as changes kept coming.

After such a refusal the client answers its token requests for `HOLD_SECONDS` with the same kind of error,
without asking APSIS: the change fails as it did (an AuthError or RateLimited, never acknowledged, retried later
with the growing delay). A new secret builds a new client (connections.py), which asks at once. An outage
(5xx, a timeout, an answer without a token) is not held: the next call asks again.

Held per client alone, a refusal still cost one token request a minute per Lambda container: fifty warm workers
with a revoked key spent the account's ten many times over. So the hold is shared too (`SharedRefusals`: the
state table's record, store/token_refusals.py, wired by connections.py): a client whose request is refused
records the refusal's kind and until-when for its account and credentials, and every client reads that record
(one read) before it asks APSIS for a token; while it stands, the client answers with the same class of error,
without asking, and holds it locally (the fast path: its next calls read nothing). A record that is missing,
unreadable or past asks as before; a store that fails is logged and skipped (it never fails a call a refusal
would not have failed). A client whose token request succeeds deletes the record, unless it was recorded after
that request was sent, or a few seconds before (`clear`: two machines' clocks, CLEAR_SKEW_SECONDS): left, a recovered account stayed held for the rest of the hold by every
container and command that read the record (one that holds it already keeps its own hold until its end).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Protocol, TypeVar

from efficy_sync.clients.errors import AuthError, RateLimited
from efficy_sync.observability import logger  # the PII-scrubbing logger: one logging path

#: one token request a minute per credentials (every container together) at most while APSIS refuses them: the
#: limit's own window (EFFICY_SYNC_TOKEN_HOLD_SECONDS overrides it: the local stack, whose retry delays are
#: seconds, holds 1 s)
HOLD_SECONDS = 60.0


def hold_seconds() -> float:
    """HOLD_SECONDS, or the environment's EFFICY_SYNC_TOKEN_HOLD_SECONDS (read at each refusal)."""
    try:
        return max(0.0, float(os.environ.get("EFFICY_SYNC_TOKEN_HOLD_SECONDS", HOLD_SECONDS)))
    except ValueError:
        return HOLD_SECONDS


#: the refusals held, as an OAuth token endpoint answers them: the credentials (400 `invalid_client`,
#: `invalid_grant`, `unauthorized_client`; 401; 403) and the account's token budget (429). Another status (a
#: proxy's 404 or 405 in front of APSIS) is not one of the account's token requests: the next call asks again
HELD_STATUSES = frozenset({400, 401, 403, 429})
T = TypeVar("T")
#: the classes a shared record names (`kind`): the errors a held refusal is answered with
KINDS: dict[str, type[AuthError | RateLimited]] = {"auth": AuthError, "rate_limit": RateLimited}


#: what a failed call to the shared record leaves, said in the warning (the same words for all three were wrong)
_SKIPPED = {
    "load": "other containers' refusals are not seen here",
    "save": "the refusal is held in this container only",
    "clear": "other containers keep the old refusal until it ends",
}


class SharedRefusals(Protocol):
    """The refusal of one API client's credentials shared by every client of them (store/token_refusals.py)."""

    def load(self) -> tuple[str, int | None, str, float] | None:
        """(kind, status, message, until in epoch seconds) of the refusal last recorded, or None."""
        ...

    def save(self, kind: str, status: int | None, message: str, until: float, refused_at: float | None = None) -> None:
        """Records a refusal that stands until `until`, refused at `refused_at` (epoch seconds)."""
        ...

    def clear(self, asked_at: float) -> None:
        """Forgets the refusal after a token request sent at `asked_at` succeeded, unless recorded since."""
        ...


class TokenHold:
    """The last refusal of this client's token request and until when it stands (`clock`: epoch seconds)."""

    def __init__(self, clock: Callable[[], float], shared: SharedRefusals | None = None) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._refused: AuthError | RateLimited | None = None
        self._until = 0.0
        self._shared = shared

    def share(self, shared: SharedRefusals | None) -> None:
        """Holds this client's refusals account-wide from now on (connections.py wires the state table's record
        before any thread sees the client)."""
        self._shared = shared

    def fetch(self, ask: Callable[[], T]) -> T:
        """`ask()` (the token request), unless a refusal still stands, this client's own or one another client
        of the same credentials recorded: then an error of the refusal's class."""
        with self._lock:
            self._raise_if_held()
        self.check_shared()
        asked_at = self._clock()
        try:
            token = ask()
        except (AuthError, RateLimited) as exc:
            if exc.status in HELD_STATUSES:
                until = self._clock() + hold_seconds()
                with self._lock:  # a hold standing already was read from the record (check_shared): not renewed
                    fresh = self._refused is None or not self._stands(self._until)
                    if fresh:
                        self._refused, self._until = exc, until
                if fresh:
                    self._record(exc, until)
            raise
        with self._lock:
            self._refused = None
        self._call("clear", asked_at)  # best effort, as every call to the record
        return token

    def check_shared(self) -> None:
        """One read of the shared record: a refusal that stands there is held here too and raised. Also called by
        a client that waited for another's token request which brought no token (apsis_transport.py)."""
        found = self._call("load")
        if not found:
            return
        kind, status, message, until = found
        held = KINDS.get(kind)
        # past, a kind of a later version, or longer than this deployment holds (a command in an admin's shell
        # holds a minute; the local stack's Lambdas 1 s, their retry delays are seconds): ask as before
        if held is None or not self._stands(until) or until - self._clock() > hold_seconds():
            return
        with self._lock:
            self._refused, self._until = held(message, status=status, detail=message), until
            self._raise_if_held()

    def _stands(self, until: float) -> bool:
        """Bounded by the longest hold: a record dated by a clock far ahead (or forged) never holds for long."""
        return 0 <= until - self._clock() <= max(HOLD_SECONDS, hold_seconds())

    def _raise_if_held(self) -> None:
        refused = self._refused
        if refused is not None and self._stands(self._until):
            left = self._until - self._clock()
            message = f"{refused} (not asked again for {left:.0f}s: APSIS allows 10 token requests a minute)"
            raise type(refused)(message, status=refused.status, detail=refused.detail)

    def _record(self, refused: AuthError | RateLimited, until: float) -> None:
        kind = "rate_limit" if isinstance(refused, RateLimited) else "auth"
        self._call("save", kind, refused.status, str(refused)[:300], until, self._clock())

    def _call(self, action: str, *args: object) -> tuple[str, int | None, str, float] | None:
        """One call to the shared record; a failing one (no permission, throttled) is logged and skipped: the
        record spares the account's token requests, it is not part of the call (and a refusal is raised anyway)."""
        if self._shared is None:
            return None
        try:
            found: tuple[str, int | None, str, float] | None = getattr(self._shared, action)(*args)
        except Exception as exc:
            logger.warning(
                "APSIS token refusal record: %s failed (%s); %s", action, type(exc).__name__, _SKIPPED[action]
            )
            return None
        return found
