"""The API clients' call meter under threads: every APSIS and Efficy call records into it.

A page runs 16 person threads and each HTTP call records one count. With one shared lock per call, a thread
switched out by the GIL while holding the lock stalls every other thread (a lock convoy); the product's meter
counts per thread instead. Measured: the same 80,000 records (with a little Python work between them, as a
client does) from 1 thread and from 16, for the product's meter and for a one-lock meter (the earlier design,
kept here as the reference). Times are the median of five runs in this process; the ratio 16 threads / 1 thread
is the figure to compare (1.0: threads cost nothing extra).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Any

from efficy_sync.clients.meter import CallMeter, count_into

RECORDS = 80_000


class OneLockMeter(CallMeter):
    """The reference: CallMeter as it was, one process-wide lock around every record's counting."""

    def __init__(self) -> None:
        super().__init__()
        self._counts: Counter[tuple[str, str]] = Counter()

    def _add(self, api: str, statuses: list[int | None]) -> None:
        with self._lock:
            count_into(self._counts, api, statuses)

    def take(self) -> dict[tuple[str, str], int]:
        with self._lock:
            counts = {key: n for key, n in self._counts.items() if n}
            self._counts.clear()
        return counts


class _Response:
    status_code = 200
    raw = None


def _run(make: Any, threads: int) -> float:
    meter = make()
    response = _Response()

    def work(n: int) -> None:
        for _ in range(n):
            meter.record("apsis", response)
            sum(range(200))

    workers = [threading.Thread(target=work, args=(RECORDS // threads,)) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    counted = meter.take().get(("apsis", "calls"), 0)
    if counted != RECORDS // threads * threads:
        raise AssertionError(f"the meter counted {counted} of {RECORDS // threads * threads} records")
    return elapsed


def bench(quick: bool = False) -> dict[str, Any]:
    runs = 2 if quick else 5
    out: dict[str, Any] = {"records": RECORDS, "runs": runs}
    for name, make in (("per_thread", CallMeter), ("one_lock", OneLockMeter)):
        for threads in (1, 16):
            out[f"{name}_{threads}"] = round(statistics.median(_run(make, threads) for _ in range(runs)), 3)
        out[f"{name}_ratio"] = round(out[f"{name}_16"] / out[f"{name}_1"], 2)
    return out


def render(results: dict[str, Any]) -> str:
    return "\n".join(
        [
            "## Call meter under threads",
            "",
            f"`make bench` → `bench.meter.bench`: {results['records']:,} records of one API call each, from 1 thread "
            f"and from 16 (a page's person threads), median of {results['runs']} runs; the one-lock meter is the "
            "earlier design, kept in the benchmark as the reference.",
            "",
            "| meter | 1 thread | 16 threads | 16 / 1 |",
            "|---|---:|---:|---:|",
            f"| per-thread counts (the product) | {results['per_thread_1']} s | {results['per_thread_16']} s | "
            f"{results['per_thread_ratio']} |",
            f"| one lock per call (reference) | {results['one_lock_1']} s | {results['one_lock_16']} s | "
            f"{results['one_lock_ratio']} |",
        ]
    )


if __name__ == "__main__":
    print(render(bench()))
