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


def count_into(counts: Counter[tuple[str, str]], api: str, statuses: list[int | None]) -> None:
    """One call's attempts into `counts`: every attempt, and among them the 429s, 5xx and unanswered."""
    counts[(api, "calls")] += len(statuses)
    for status in statuses:
        if status is None:
            counts[(api, "timeouts")] += 1
        elif status == 429:
            counts[(api, "429")] += 1
        elif status >= 500:
            counts[(api, "5xx")] += 1


class CallMeter:
    """Counters per thread, summed when taken (once per invocation).

    A call takes no lock: each thread counts into its own Counter, which only that thread writes. One shared lock
    per call was a convoy under the GIL: with a page's 16 person threads calling at once, a thread switched out
    while holding it stalled the others (a micro-benchmark of 16 threads recording: 1.1 s with the lock, 0.25 s
    without, for the same counts). `take` sums snapshots of every thread's counts (a dict copy is atomic under
    the GIL) and returns what grew since the last take, so a count that lands during a take is in the next one,
    never lost; the counts of threads that ended are folded into one Counter so the list stays short.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the list of threads and the totals; never taken by a call
        self._local = threading.local()
        self._live: list[tuple[threading.Thread, Counter[tuple[str, str]]]] = []
        self._ended: Counter[tuple[str, str]] = Counter()
        self._taken: Counter[tuple[str, str]] = Counter()

    def record(self, api: str, response: Any) -> None:
        """One logical call that got an answer, with the attempts the session retried inside it."""
        self._add(api, attempt_statuses(response))

    def record_unanswered(self, api: str, attempts: int = 1) -> None:
        """A call that raised before any answer came back (connection refused, timeouts after the retries)."""
        self._add(api, [None] * max(1, attempts))

    def _own(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] | None = getattr(self._local, "counts", None)
        if counts is None:
            counts = self._local.counts = Counter()
            with self._lock:
                self._live.append((threading.current_thread(), counts))
        return counts

    def _add(self, api: str, statuses: list[int | None]) -> None:
        count_into(self._own(), api, statuses)

    def take(self) -> dict[tuple[str, str], int]:
        """The counts since the last take, {(api, kind): n}; the meter starts again from zero."""
        with self._lock:
            totals = Counter(self._ended)
            live = []
            for thread, counts in self._live:
                alive = thread.is_alive()  # before the copy: a thread seen ended has written its last count
                snapshot = dict(counts)
                totals.update(snapshot)
                if alive:
                    live.append((thread, counts))
                else:
                    self._ended.update(snapshot)
            self._live = live
            grown = {key: n - self._taken[key] for key, n in totals.items() if n > self._taken[key]}
            self._taken = totals
        return grown


#: the process's meter: one per Lambda container, shared by every client
meter = CallMeter()
