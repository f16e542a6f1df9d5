"""Issue 13.4: diff mode sends fewer calls, and keeps the consent safety while doing it.

The real PersonSyncer, page worker and ApsisClient against the APSIS One and Efficy simulators over HTTP; the
state table is the in-memory store with the same contract (no AWS needed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.consent import OptOutRecord
from efficy_sync.fullsync.page import CHUNK, sync_page
from efficy_sync.state import UNKNOWN
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
NEWS = "usercreated.topics.newsletter-ab12"
SLOT = f"{NEWS}|email"
CRM = "com.apsis1.keyspaces.crm-id"
FIRSTNAME = "com.apsis1.attributes.firstname"
RAW = {
    "integration_id": "diffcalls",
    "efficy": {
        "base_url": "https://crm.example.com/crm",
        "api_key_secret": "x/e",
        "webhook_secret_secret": "x/w",
        "page_size": 100,
    },
    "apsis": {
        "base_url": "https://api.example.com",
        "section": "com.apsis1.sections.default",
        "credentials_secret": "x/a",
        "optout_token_secret": "x/o",
    },
    "field_mappings": [{"efficy": "FIRSTNAME", "apsis": FIRSTNAME}],
    "consent_mappings": [{"crm_profile": 12, "subscription": NEWS, "channel": "email"}],
    "tags": {"profiles": [{"crm_profile": 12, "tag": "newsletter-readers"}]},
}
CFG = config_from_dict(RAW)


def person(key: int, stamp: str = "2024-05-01T10:00:00") -> dict[str, Any]:
    return {
        "K_CONTACT": key,
        "NAME": f"N{key}",
        "FIRSTNAME": f"F{key}",
        "EMAIL1": f"d{key}@example.com",
        "D_CHANGE": stamp,
        "profiles": [12],
    }


@pytest.fixture
def apsis_sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield sim
    sim.stop()


@pytest.fixture
def apsis(apsis_sim: ApsisSimulator) -> ApsisClient:
    return ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)


def profile_calls(sim: ApsisSimulator) -> Counter[str]:
    """The simulator's calls about profiles, by method and route (the token and definition lists left out)."""
    return Counter({k: v for k, v in sim.calls().items() if "/profiles" in k})


def test_a_new_person_is_created_with_their_attributes_in_one_call(apsis_sim, apsis) -> None:
    outcome = PersonSyncer(CFG, apsis, MemoryPersonStateStore(), email_lookup=lambda address: []).sync(
        7, person(7), None
    )

    assert outcome.result == "synced"
    calls = profile_calls(apsis_sim)
    assert sum(calls.values()) == 3, calls  # v1 attribute PATCH (creates), the opt-in, the tags
    assert not any(k.startswith("POST") and k.endswith("/profiles") for k in calls), "a separate create was sent"
    created = apsis_sim.get_profile(CRM, "7")
    assert created is not None
    assert created["attributes"][FIRSTNAME] == "F7"
    assert created["attributes"]["com.apsis1.attributes.email"] == "d7@example.com"
    assert [(c["topic"], c["type"]) for c in created["consents"]] == [(NEWS, "opt-in")]
    assert created["tags"] == ["newsletter-readers"]


def test_the_two_call_create_stays_available_behind_the_setting(apsis_sim, apsis) -> None:
    two_calls = config_from_dict({**RAW, "apsis": {**RAW["apsis"], "create_with_attribute_patch": False}})
    PersonSyncer(two_calls, apsis, MemoryPersonStateStore(), email_lookup=lambda address: []).sync(7, person(7), None)

    calls = profile_calls(apsis_sim)
    assert sum(calls.values()) == 4, calls
    assert any(k.startswith("POST") and k.endswith("/profiles") for k in calls)
    assert any(k.startswith("PATCH /v2/") and k.endswith("/attributes") for k in calls)


def test_a_profile_deleted_in_apsis_is_created_again_with_its_changed_attributes(apsis_sim, apsis) -> None:
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    syncer.sync(7, person(7), None)
    apsis_sim.reset()  # deleted behind our back
    changed = {**person(7, "2024-05-02T10:00:00"), "FIRSTNAME": "Renamed"}

    syncer.sync(7, changed, store.get("diffcalls", 7))

    assert apsis_sim.get_profile(CRM, "7")["attributes"][FIRSTNAME] == "Renamed"


class CountingStore(MemoryPersonStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def get(self, integration_id: str, person_key: int | str) -> Any:
        self.reads["get"] += 1
        return super().get(integration_id, person_key)

    def get_many(self, integration_id: str, keys: Any) -> Any:
        self.reads["get_many"] += 1
        return super().get_many(integration_id, keys)


def test_a_page_reads_the_stored_states_once_per_chunk_not_once_per_opt_in(
    apsis_sim: ApsisSimulator, apsis: ApsisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")  # the pace is not what this test is about
    efficy_sim = EfficySimulator().start()
    persons = 2 * CHUNK + 5
    try:
        efficy_sim.upsert_persons([person(k) for k in range(1, persons + 1)])
        store = CountingStore()
        descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 200, "tail": False}
        with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
            result = sync_page(CFG, descriptor, efficy=efficy, apsis=apsis, states=store, dry_run=False)
    finally:
        efficy_sim.stop()

    assert result.counters["failed"] == 0 and result.persons == persons
    assert len(apsis_sim.profiles()) == persons
    assert all(p["consents"] for p in apsis_sim.profiles())  # every person got the opt-in
    assert store.reads == Counter(get_many=3), store.reads  # three chunks; no read per person


class OptOutDuringSend:
    """The write-back records an APSIS opt-out while our opt-in is on its way (after the chunk was read)."""

    def __init__(self, apsis: ApsisClient, store: MemoryPersonStateStore) -> None:
        self._apsis, self._store = apsis, store

    def set_consent(self, key: str, topic: str, channel: str, consent_type: str, **kw: Any) -> str:
        record = OptOutRecord(at="2024-05-01T12:00:00Z", source="apsis", awaiting_writeback=True)
        self._store.record_optout("diffcalls", int(key), SLOT, record)
        return self._apsis.set_consent(key, topic, channel, consent_type, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._apsis, name)


def test_an_opt_out_recorded_after_the_chunk_read_is_not_lost_to_the_opt_in(apsis_sim, apsis) -> None:
    store = MemoryPersonStateStore()
    racing = PersonSyncer(
        CFG,
        OptOutDuringSend(apsis, store),
        store,
        clock=lambda: "2024-05-01T12:00:05Z",
        email_lookup=lambda address: [],
    )
    racing.sync(7, person(7), store.get("diffcalls", 7), fresh=True)  # no re-read of its own before the opt-in
    # APSIS holds our opt-in now, though the person opted out: the slot must read "unknown", not "opt-in"
    assert store.get("diffcalls", 7).consents[SLOT] == UNKNOWN

    PersonSyncer(CFG, apsis, store, email_lookup=lambda address: []).sync(7, person(7), store.get("diffcalls", 7))

    consents = apsis_sim.get_profile(CRM, "7")["consents"]
    assert [(c["topic"], c["type"]) for c in consents] == [(NEWS, "opt-out")]


def test_an_attribute_given_a_new_version_is_written_with_the_new_version_id(apsis_sim, apsis) -> None:
    """The v1 PATCH names attribute *versions*; a version APSIS retired after we listed them is not the
    person's fault: the client lists them again and writes once more, instead of failing the person."""
    syncer = PersonSyncer(CFG, apsis, MemoryPersonStateStore(), email_lookup=lambda address: [])
    syncer.sync(7, person(7), None)  # lists the versions
    definitions = apsis_sim.definitions()
    for attribute in definitions["sections"][0]["attributes"]:
        if attribute["discriminator"] == FIRSTNAME:
            attribute["versions"][0]["deprecated_at"] = "2026-01-01T00:00:00Z"
            attribute["versions"].append({"id": "6a0e1f52-0003-4a1a-9e01-00000000beef", "deprecated_at": None})
    apsis_sim.set_definitions(definitions)

    outcome = syncer.sync(8, person(8), None)

    assert outcome.result == "synced", outcome.reason
    assert apsis_sim.get_profile(CRM, "8")["attributes"][FIRSTNAME] == "F8"
