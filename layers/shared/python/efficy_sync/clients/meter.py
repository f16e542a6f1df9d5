"""HTTP exchanges the API clients made, counted per API, for the metrics a handler publishes.

The clients record here instead of emitting metrics themselves: they stay free of Lambda and powertools (the
CLI and the benchmarks use them too), and `efficy_sync.observability` turns the counts into EMF metrics when a
handler's metrics are flushed. The session's own retries (429, 5xx, timeouts) are counted too, because they
are what APSIS One's rate limits and an operator's bill see.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

#: what is counted per API: HTTP attempts, and among them the 429s, the 5xx and the attempts left unanswered
KINDS = ("calls", "429", "5xx", "timeouts")


def attempt_statuses(response: Any) -> list[int | None]:
    """Status of every attempt behind one response: the ones urllib3 retried (None: no answer), then the last."""
    retries = getattr(getattr(response, "raw", None), "retries", None)
    history = getattr(retries, "history", None) or ()
    return [entry.status for entry in history] + [response.status_code]


class CallMeter:
    """Thread-safe counters, taken (read and reset) once per invocation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def record(self, api: str, response: Any) -> None:
        """One logical call that got an answer, with the attempts the session retried inside it."""
        self._add(api, attempt_statuses(response))

    def record_unanswered(self, api: str, attempts: int = 1) -> None:
        """A call that raised before any answer came back (connection refused, timeouts after the retries)."""
        self._add(api, [None] * max(1, attempts))

    def _add(self, api: str, statuses: list[int | None]) -> None:
        with self._lock:
            counts = self._counts
            counts[(api, "calls")] += len(statuses)
            for status in statuses:
                if status is None:
                    counts[(api, "timeouts")] += 1
                elif status == 429:
                    counts[(api, "429")] += 1
                elif status >= 500:
                    counts[(api, "5xx")] += 1

    def take(self) -> dict[tuple[str, str], int]:
        """The counts since the last take, {(api, kind): n}; the meter starts again from zero."""
        with self._lock:
            counts = {key: n for key, n in self._counts.items() if n}
            self._counts.clear()
        return counts


#: the process's meter: one per Lambda container, shared by every client
meter = CallMeter()
