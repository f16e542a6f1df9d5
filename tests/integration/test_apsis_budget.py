"""Issue 13.5: one APSIS One budget per account, shared by every worker (pages, real-time, write-back).

The budget's counters live in DynamoDB (moto, in-process); the requests go to the APSIS simulator over HTTP,
which enforces the documented 100 requests/s per account (429 beyond) and counts requests per calendar second.
Each SharedBudget instance stands for one Lambda: they share nothing but the table.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from efficy_sync import aws
from efficy_sync.budget import SLOT_SECONDS, KeyLimit, PacedApsis, SharedBudget
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.store import budget_slots
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.support import create_pk_sk_table

TABLE = "state"
NO_RETRY = RetryPolicy(total=0, backoff_factor=0.0, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)


class Serialised:
    """moto's in-process backend is not thread-safe (DynamoDB is): the test's budgets, which stand for separate
    Lambdas, reach it one call at a time."""

    _lock = threading.Lock()

    def __init__(self, real: Any) -> None:
        self._real = real
        self.exceptions = real.exceptions

    def update_item(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._real.update_item(**kwargs)


@pytest.fixture
def table(in_process_aws: str, monkeypatch: pytest.MonkeyPatch) -> str:
    create_pk_sk_table(TABLE, in_process_aws)
    monkeypatch.setattr(budget_slots, "client", lambda service: Serialised(aws.client(service)))
    return TABLE


#: a small account, so a loaded test machine still sends more than it allows, and the test stays short
RATE = 40.0


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="budget", client_secret="budget-secret").start()
    simulator.account_rate = RATE
    simulator.reset()  # the account's bucket is built at reset
    yield simulator
    simulator.stop()


def client(sim: ApsisSimulator) -> ApsisClient:
    """No retries: a 429 is an error here, not something the session hides by backing off."""
    return ApsisClient(sim.url, "budget", "budget-secret", section="com.apsis1.sections.default", policy=NO_RETRY)


def flood(workers: list[Any], calls: int, threads: int = 6) -> list[Exception]:
    """`calls` profile creations, spread over `workers`, each worker `threads` threads at once."""
    keys = itertools.count(1)
    errors: list[Exception] = []

    def one(worker: Any) -> None:
        try:
            worker.create_profile(str(next(keys)))
        except Exception as exc:  # collected and asserted on
            errors.append(exc)

    jobs = [workers[i % len(workers)] for i in range(calls)]
    with ThreadPoolExecutor(threads * len(workers)) as pool:
        list(pool.map(one, jobs))
    return errors


def test_the_simulator_refuses_what_this_test_sends_without_a_budget(sim: ApsisSimulator) -> None:
    """The flood below is more than the account allows: without pacing, APSIS answers 429."""
    apsis = client(sim)
    apsis.list_sections()  # token first
    errors = flood([apsis] * 4, 150)
    assert errors and sim.rate()["refused"] > 0


def test_workers_sharing_the_budget_keep_the_account_under_90_percent(table: str, sim: ApsisSimulator) -> None:
    """The account's requests per calendar second, as APSIS counts them, never pass 90 % of its limit."""
    apsis = client(sim)
    apsis.list_sections()
    # pages and a real-time worker, each a Lambda of its own with its own in-process state
    workers = [PacedApsis(apsis, SharedBudget(table, "acct", RATE)) for _ in range(4)]
    errors = flood(workers, 90, threads=4)

    assert errors == []
    rate = sim.rate()
    assert rate["refused"] == 0
    assert len(sim.profiles()) == 90
    assert rate["max_per_second"] <= 0.9 * RATE, rate["per_second"]


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 1e-6)


def test_a_worker_alone_may_use_the_whole_cap_and_a_second_one_shares_it(table: str) -> None:
    clock = Clock()
    alone = SharedBudget(table, "acct", 100.0, clock=clock, sleep=clock.sleep)
    assert alone.slot_cap == 9  # 90 % of 100 requests/s, per 100 ms slot
    for _ in range(9):
        alone.wait()
    assert clock.now == 1_000_000.0  # the whole slot, no wait: not a fixed fifth of it
    alone.wait()  # the tenth waits for the next slot
    assert clock.now >= 1_000_000.0 + SLOT_SECONDS

    other = SharedBudget(table, "acct", 100.0, clock=clock, sleep=clock.sleep)
    slot = int(clock.now / SLOT_SECONDS)
    for _ in range(8):  # what `alone` left of this slot
        other.wait()
    assert int(clock.now / SLOT_SECONDS) == slot
    other.wait()
    assert int(clock.now / SLOT_SECONDS) == slot + 1

    elsewhere = SharedBudget(table, "another-account", 100.0, clock=clock, sleep=clock.sleep)
    for _ in range(9):  # another account's budget is its own
        elsewhere.wait()
    assert int(clock.now / SLOT_SECONDS) == slot + 1


def test_one_profile_key_gets_at_most_ten_calls_a_second() -> None:
    clock = Clock()
    limit = KeyLimit(10, clock=clock, sleep=clock.sleep)
    for _ in range(10):
        limit.wait("7")
    limit.wait("8")  # another key is not held back
    assert clock.now == 1_000_000.0
    limit.wait("7")
    assert clock.now >= 1_000_001.0


def test_a_rate_no_account_has_turns_the_budget_off(table: str) -> None:
    """Benchmarks raise the rate to time the product itself: then the budget costs no DynamoDB call."""
    budget = SharedBudget(table, "acct", 100_000.0)
    for _ in range(100):
        budget.wait()
    assert budget.unlimited and budget.takes == 0
    assert not SharedBudget(table, "acct", 100.0).unlimited


def test_a_full_budget_does_not_outlast_the_invocation(table: str) -> None:
    """The wait never looked at the invocation's deadline: with the account's budget full, a worker slept into
    Lambda's hard timeout, losing the batch's report. Now it stops with OutOfTime (retried) before that."""
    from efficy_sync.clients.errors import OutOfTime
    from efficy_sync.clients.http import deadline

    clock = Clock()
    full = SharedBudget(table, "acct-full", 100.0, clock=clock, sleep=clock.sleep)
    for _ in range(9):
        full.wait()  # this slot is used up: the next take would wait
    with deadline(0.5), pytest.raises(OutOfTime):  # less than a call needs is left
        full.wait()
