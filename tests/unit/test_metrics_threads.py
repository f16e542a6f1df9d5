"""Counts added by a page's threads at once: none is lost.

powertools builds a metric's entry on its first value without a lock (read the set, append, store the entry), so
two threads counting a name first at once each stored an entry of their own and one value was lost
(EmailConflicts and ExistingOptOutsKept are counted from the person threads). The step between the
read and the store is slowed here (powertools logs there), so the race happens every time on code that has it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.metrics.provider.cloudwatch_emf import cloudwatch
from efficy_sync.observability import count, metrics

THREADS = 6


class _SlowLog:
    """powertools' module logger, whose debug line (between reading the entry and storing it) takes a while."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def debug(self, *args: Any, **kwargs: Any) -> None:
        time.sleep(0.05)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.fixture
def slow_metric_entry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(cloudwatch, "logger", _SlowLog(cloudwatch.logger))
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()


def test_threads_counting_a_new_metric_at_once_lose_no_value(slow_metric_entry: None) -> None:
    start = threading.Barrier(THREADS)

    def add() -> None:
        start.wait()
        count("EmailConflicts")

    threads = [threading.Thread(target=add) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert metrics.provider.metric_set["EmailConflicts"]["Value"] == [1.0] * THREADS
