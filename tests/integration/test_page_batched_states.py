"""Issue 13.3 on the page path: a full-sync page writes its persons' states in batches (fullsync/page_states.py),
reads each state once in import mode, and keeps every consent safety property of the per-person put.

The real page worker, PersonSyncer and clients against the Efficy and APSIS One simulators over HTTP; the state
table is the in-memory store with the same contract (put, put_batch, revisions), counting its calls.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.page import CHUNK, sync_page
from efficy_sync.state import UNSURE_HASH, PersonState
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
FIRSTNAME = "com.apsis1.attributes.firstname"
RAW: dict[str, Any] = {
    "integration_id": "batched",
    "efficy": {
        "base_url": "https://crm.example.com/crm",
        "api_key_secret": "x/e",
        "webhook_secret_secret": "x/w",
        "page_size": 200,
    },
    "apsis": {
        "base_url": "https://api.example.com",
        "section": "com.apsis1.sections.default",
        "credentials_secret": "x/a",
        "optout_token_secret": "x/o",
    },
    "sync_conditions": [{"field": "OPENED", "equals": "1"}],
    "field_mappings": [{"efficy": "FIRSTNAME", "apsis": FIRSTNAME}],
    "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
}
CFG = config_from_dict(RAW)
DESCRIPTOR = {"page": 0, "first": 0, "pages": 1, "page_size": 200, "tail": False}


def person(key: int, *, opened: str = "1", stamp: str = "2024-05-01T10:00:00") -> dict[str, Any]:
    return {
        "K_CONTACT": key,
        "NAME": f"N{key}",
        "FIRSTNAME": f"F{key}",
        "EMAIL1": f"b{key}@example.com",
        "OPENED": opened,
        "D_CHANGE": stamp,
        "profiles": [12],
    }


class CountingStore(MemoryPersonStateStore):
    """The in-memory state table, counting reads (keys read) and writes (single puts, batches)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def get_many(self, integration_id: str, keys: Any) -> Any:
        keys = list(keys)
        self.calls["get_many"] += 1
        self.calls["keys_read"] += len(keys)
        return super().get_many(integration_id, keys)

    def put(self, state: PersonState) -> None:
        self.calls["put"] += 1
        super().put(state)

    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        self.calls["put_batch"] += 1
        self.calls["batched_states"] += len(states)
        return super().put_batch(states, workers=workers)


@pytest.fixture
def apsis_sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(client_id="b", client_secret="b-secret", rate_limits=False).start()
    yield sim
    sim.stop()


@pytest.fixture
def apsis(apsis_sim: ApsisSimulator) -> ApsisClient:
    return ApsisClient(apsis_sim.url, "b", "b-secret", section=CFG.apsis.section, policy=FAST)


@pytest.fixture
def efficy_sim() -> Iterator[EfficySimulator]:
    sim = EfficySimulator().start()
    yield sim
    sim.stop()


@pytest.fixture(autouse=True)
def _no_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")  # the pace is not what these tests are about


def run_page(efficy_sim: EfficySimulator, apsis: Any, store: MemoryPersonStateStore, **kw: Any) -> Any:
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        return sync_page(CFG, DESCRIPTOR, efficy=efficy, apsis=apsis, states=store, dry_run=False, **kw)


def test_a_page_writes_its_states_in_batches_skipped_persons_included(efficy_sim, apsis_sim, apsis) -> None:
    n = 2 * CHUNK + 10
    efficy_sim.upsert_persons([person(k, opened="0" if k % 5 == 0 else "1") for k in range(1, n + 1)])
    store = CountingStore()

    result = run_page(efficy_sim, apsis, store)

    skipped = n // 5
    assert result.counters["skipped"] == skipped and result.counters["failed"] == 0
    assert store.calls["put"] == 0, store.calls  # not one PutItem per person
    assert store.calls["put_batch"] == 3 and store.calls["batched_states"] == n  # one batch per chunk
    states = store.get_many("batched", range(1, n + 1))
    assert len(states) == n
    assert sum(s.last_outcome == "skipped" for s in states.values()) == skipped
    assert len(apsis_sim.profiles()) == n - skipped  # a person failing the conditions is never created


def test_an_import_mode_page_reads_each_state_once(efficy_sim, apsis) -> None:
    """The split reads the page's states; the per-person path (here: the skipped persons) uses that read."""
    n = 2 * CHUNK + 10
    efficy_sim.upsert_persons([person(k, opened="0" if k % 5 == 0 else "1") for k in range(1, n + 1)])
    store = CountingStore()
    queued: list[int] = []

    result = run_page(efficy_sim, apsis, store, write_mode="import", queue=lambda page, size, keys: queued.extend(keys))

    assert len(queued) == n - n // 5 and result.counters["skipped"] == n // 5
    assert store.calls["keys_read"] == n, store.calls  # was more: the per-person chunks read their states again
    assert store.calls["put"] == 0 and store.calls["batched_states"] == n // 5


class WriteBackDuringSend:
    """Another writer stores the state of person 1 while the chunk's APSIS calls run (after the chunk's read,
    before its batch is written): what the opt-out write-back may do during a run."""

    def __init__(self, apsis: ApsisClient, store: MemoryPersonStateStore) -> None:
        self._apsis, self._store, self.done = apsis, store, False

    def create_with_attributes(self, key: str, *args: Any, **kw: Any) -> Any:
        if key == "1" and not self.done:
            self.done = True
            stored = self._store.get("batched", 1)
            other = stored or PersonState(integration_id="batched", person_key="1", change_stamp="2024-05-01T09:00:00")
            self._store.put(other.model_copy(update={"skip_reason": "written by another writer"}))
        return self._apsis.create_with_attributes(key, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._apsis, name)


def test_a_state_stored_by_another_writer_meanwhile_is_not_overwritten_by_the_batch(
    efficy_sim, apsis_sim, apsis
) -> None:
    efficy_sim.upsert_persons([person(k) for k in range(1, 6)])
    store = CountingStore()

    result = run_page(efficy_sim, WriteBackDuringSend(apsis, store), store)

    assert result.counters["failed"] == 0
    stored = store.get("batched", 1)
    assert stored is not None
    # the chunk's write-ahead stored revision 1; the batch refused the state read before the other write; what
    # the page sent was marked on what that writer stored (revision 3), and the person was synced again against
    # it (4): nothing it stored was written over blindly
    assert stored.revision == 4, stored
    assert stored.exists_in_apsis and stored.last_outcome == "synced"
    assert len(apsis_sim.profiles()) == 5


class FailsForOne:
    """APSIS is out for person 3 only: the page fails (the state machine retries it)."""

    def __init__(self, apsis: ApsisClient) -> None:
        self._apsis = apsis

    def create_with_attributes(self, key: str, *args: Any, **kw: Any) -> Any:
        if key == "3":
            raise ApsisUnavailable("outage")
        return self._apsis.create_with_attributes(key, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._apsis, name)


def test_a_failing_person_does_not_cost_the_chunk_the_record_of_what_reached_apsis(efficy_sim, apsis) -> None:
    efficy_sim.upsert_persons([person(k) for k in range(1, 6)])
    store = CountingStore()

    with pytest.raises(ApsisUnavailable):
        run_page(efficy_sim, FailsForOne(apsis), store)

    stored = store.get_many("batched", range(1, 6))
    assert sorted(stored) == [1, 2, 3, 4, 5]  # written although the page failed: their calls did reach APSIS
    assert all(s.exists_in_apsis for s in stored.values())
    # person 3's create failed with an outage, which may come after APSIS applied it: "may exist", nothing known
    assert set(stored[3].attribute_hashes.values()) == {UNSURE_HASH} and stored[3].last_outcome != "synced"


class HoldsTheFirstPerson:
    """Person 1 (first chunk) waits until a person of the second chunk has started: only a page that starts the
    next chunk while the first one's slowest person is still out lets both through quickly."""

    def __init__(self, apsis: ApsisClient) -> None:
        self._apsis = apsis
        self.second_chunk_started = threading.Event()
        self.overlapped = False

    def create_with_attributes(self, key: str, *args: Any, **kw: Any) -> Any:
        if int(key) > CHUNK:
            self.second_chunk_started.set()
        elif key == "1":
            self.overlapped = self.second_chunk_started.wait(timeout=10)
        return self._apsis.create_with_attributes(key, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._apsis, name)


def test_the_next_chunk_starts_while_the_slowest_person_of_a_chunk_is_out(efficy_sim, apsis) -> None:
    n = 2 * CHUNK
    efficy_sim.upsert_persons([person(k) for k in range(1, n + 1)])
    store = CountingStore()
    held = HoldsTheFirstPerson(apsis)

    result = run_page(efficy_sim, held, store)

    assert held.overlapped  # was False: every chunk waited for its last person before the next was read
    assert result.counters["failed"] == 0
    assert store.calls["put"] == 0 and store.calls["put_batch"] == 2  # still one batch per chunk, its own persons
    assert len(store.get_many("batched", range(1, n + 1))) == n


def test_a_failing_person_leaves_the_chunk_already_syncing_recorded_too(efficy_sim, apsis) -> None:
    n = CHUNK + 10
    efficy_sim.upsert_persons([person(k) for k in range(1, n + 1)])
    store = CountingStore()

    with pytest.raises(ApsisUnavailable):
        run_page(efficy_sim, FailsForOne(apsis), store)

    stored = store.get_many("batched", range(1, n + 1))
    assert sorted(stored) == list(range(1, n + 1))  # the second chunk's calls were recorded too (3: "may exist")
