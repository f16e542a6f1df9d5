"""A cancel stops a full-sync page within a chunk, and what the page did before it stopped is counted.

The real sync_page against the Efficy and APSIS One simulators over HTTP (in-memory state store); the run's
counters and report: tests/integration/test_fullsync_lifecycle.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.fullsync import page
from efficy_sync.fullsync.page import CHUNK, sync_page
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import CFG, person
from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
PERSONS = 3 * CHUNK + 5
DESCRIPTOR = {"page": 0, "first": 0, "pages": 1, "page_size": 200, "tail": False}


@pytest.fixture
def sims() -> Iterator[tuple[EfficySimulator, ApsisSimulator]]:
    efficy = EfficySimulator().start()
    apsis = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    efficy.upsert_persons([person(k) for k in range(1, PERSONS + 1)])
    yield efficy, apsis
    efficy.stop()
    apsis.stop()


def run_page(sims: tuple[EfficySimulator, ApsisSimulator], should_continue: Any) -> Any:
    efficy_sim, apsis_sim = sims
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        return sync_page(
            CFG,
            DESCRIPTOR,
            efficy=efficy,
            apsis=apsis,
            states=MemoryPersonStateStore(),
            dry_run=False,
            should_continue=should_continue,
        )


def test_a_cancel_stops_the_page_at_the_next_chunk_and_counts_what_was_done(
    sims: tuple[EfficySimulator, ApsisSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")  # the pace is not what this test is about
    monkeypatch.setattr(page, "STOP_CHECK_SECONDS", 0.0)  # ask before every chunk (they take milliseconds here)
    asked: list[int] = []

    def running() -> bool:  # the page asks before its Efficy page, then before each chunk after the first
        asked.append(1)
        return len(asked) < 3  # cancelled while the second chunk syncs

    result = run_page(sims, running)

    assert result.stopped
    assert result.persons == 2 * CHUNK and result.counters["persons"] == 2 * CHUNK
    assert result.counters["created"] == 2 * CHUNK
    assert len(sims[1].profiles()) == 2 * CHUNK  # the third and fourth chunks never started
    assert result.summary()["stopped"] is True


def test_a_fast_page_does_not_ask_before_every_chunk(
    sims: tuple[EfficySimulator, ApsisSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    monkeypatch.setattr(page, "STOP_CHECK_SECONDS", 3600.0)
    asked: list[int] = []
    result = run_page(sims, lambda: asked.append(1) is None)
    assert not result.stopped and result.persons == PERSONS
    assert len(asked) == 1  # before the Efficy page only


def test_a_page_that_keeps_running_is_not_stopped(
    sims: tuple[EfficySimulator, ApsisSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    result = run_page(sims, lambda: True)
    assert not result.stopped and result.persons == PERSONS and len(sims[1].profiles()) == PERSONS


class CountingStore(MemoryPersonStateStore):
    """The in-memory store, noting how each person state was written."""

    def __init__(self) -> None:
        super().__init__()
        self.batched: list[int] = []
        self.single: list[int] = []

    def put_batch(self, states: list[Any], *, workers: int = 4) -> list[Any]:
        self.batched.extend(int(s.person_key) for s in states)
        return super().put_batch(states, workers=workers)

    def put(self, state: Any) -> None:
        self.single.append(int(state.person_key))
        super().put(state)


def test_chunks_written_after_the_cancel_take_the_conditional_put(
    sims: tuple[EfficySimulator, ApsisSimulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cancel re-sends the parked real-time changes at once: from then on a batch (no condition) could land
    on a newer real-time state, so the chunks still syncing are written person by person, conditionally."""
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    monkeypatch.setattr(page, "STOP_CHECK_SECONDS", 0.0)
    asked: list[int] = []
    store = CountingStore()
    efficy_sim, apsis_sim = sims
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        result = sync_page(
            CFG, DESCRIPTOR, efficy=efficy, apsis=apsis, states=store, dry_run=False,
            should_continue=lambda: asked.append(1) is None and len(asked) < 3,
        )  # fmt: skip
    assert result.stopped and result.persons == 2 * CHUNK
    written = set(store.batched) | set(store.single)
    assert written == set(range(1, 2 * CHUNK + 1))  # every person synced is recorded
    assert len(set(store.single) - set(store.batched)) >= 1  # the chunk in flight at the cancel: one by one
