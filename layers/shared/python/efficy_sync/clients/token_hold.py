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
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from efficy_sync.clients.errors import AuthError, RateLimited

#: one token request a minute per client at most while APSIS refuses them: the limit's own window
#: (EFFICY_SYNC_TOKEN_HOLD_SECONDS overrides it: the local stack, whose retry delays are seconds, holds 1 s)
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


class TokenHold:
    """The last refusal of this client's token request and until when it stands (`clock`: epoch seconds)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._refused: AuthError | RateLimited | None = None
        self._until = 0.0

    def fetch(self, ask: Callable[[], T]) -> T:
        """`ask()` (the token request), unless a refusal still stands: then an error of the refusal's class."""
        with self._lock:
            refused, now = self._refused, self._clock()
            if refused is not None and 0 <= self._until - now <= max(HOLD_SECONDS, hold_seconds()):
                left = self._until - now
                message = f"{refused} (not asked again for {left:.0f}s: APSIS allows 10 token requests a minute)"
                raise type(refused)(message, status=refused.status, detail=refused.detail)
        try:
            token = ask()
        except (AuthError, RateLimited) as exc:
            if exc.status in HELD_STATUSES:
                with self._lock:
                    self._refused, self._until = exc, self._clock() + hold_seconds()
            raise
        with self._lock:
            self._refused = None
        return token
