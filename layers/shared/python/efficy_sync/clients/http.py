"""One place for HTTP behaviour both clients share: sessions, timeouts, retries with backoff and jitter.

urllib3's Retry does the waiting (exponential backoff, jitter, Retry-After), so the clients only map the
final response to a typed error. POST is retried too: every call we make is safe to repeat (JSON-RPC reads,
idempotent consent/attribute writes, profile creation that answers 409 when it already exists).
"""

from __future__ import annotations

from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a client tries before it gives up and raises a TransientError."""

    total: int = 5
    backoff_factor: float = 0.5  # 0.5, 1, 2, 4 ... seconds
    backoff_max: float = 30.0
    backoff_jitter: float = 0.25
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout, self.read_timeout)


def build_session(policy: RetryPolicy, *, pool_size: int = 16) -> requests.Session:
    """A Session whose adapter retries 429/5xx, connection errors and read timeouts."""
    retry = Retry(
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
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
