"""`wait_for` (efficy_sync_tools.testing), which the demo, the benchmarks and the tests poll with, on a fake clock:
a bound, never a pace, and a costly check does not take the whole CPU."""

from __future__ import annotations

import pytest
from efficy_sync_tools import testing
from efficy_sync_tools.testing import WaitTimeout, wait_for


class Clock:
    """time.monotonic and time.sleep of the testing module, with the sleeps recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(testing.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(testing.time, "sleep", fake.sleep)
    return fake


def checking(clock: Clock, cost: float, ready_after: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def check() -> str | None:
        calls.append(1)
        clock.now += cost
        return "seen" if len(calls) > ready_after else None

    return calls, check


def test_a_cheap_check_is_polled_at_the_interval(clock: Clock) -> None:
    calls, check = checking(clock, cost=0.01, ready_after=3)
    assert wait_for("it", check, timeout=30, interval=0.2) == "seen"
    assert clock.sleeps == [0.2, 0.2, 0.2] and len(calls) == 4


def test_a_costly_check_waits_as_long_as_it_took(clock: Clock) -> None:
    calls, check = checking(clock, cost=0.7, ready_after=3)
    assert wait_for("it", check, timeout=30, interval=0.2) == "seen"
    assert len(calls) == 4 and clock.sleeps == [
        0.7,
        0.7,
        0.7,
    ]  # polling half the time, not all of it (0.2 s between 0.7 s checks)


def test_the_bound_holds_and_the_last_check_is_reported(clock: Clock) -> None:
    calls, check = checking(clock, cost=0.7, ready_after=10_000)
    with pytest.raises(WaitTimeout, match="timed out after 3s waiting for it"):
        wait_for("it", check, timeout=3, interval=0.2)
    assert len(calls) == 3  # checks at 0, 1.4 and 2.8 s
    assert clock.sleeps == [0.7, 0.7] and clock.now == pytest.approx(3.5)  # no sleep once the bound is passed
