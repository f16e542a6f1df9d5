"""APSIS One's own 404 to a profile call because the integration's section or keyspace is gone (deleted or
renamed in APSIS, access taken away, a config naming the wrong one), not the profile: the consents read that
confirms "the profile is gone" names the same section and keyspace, so it answered 404 too. Read as a deleted
profile, the person's state was reset (what we pushed, the opt-ins we sent), and once the section was back the
opt-out of a subscription the person had left was never sent: APSIS kept the opt-in. A delete met "already
gone" and was recorded as done. Now the definition lists decide: the integration's failure (MappingGone), the
state untouched, nothing recorded as sent."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import MappingGone
from efficy_sync.config import config_from_dict
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CRM, FAST, RAW, person
from tests.memory_store import MemoryPersonStateStore

EVENTS = "usercreated.topics.events-ef56"
TWO = copy.deepcopy(RAW)
TWO["consent_mappings"].append({"crm_profile": 13, "subscription": EVENTS, "channel": "email"})


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def _renamed(sim: ApsisSimulator, kind: str, old: str) -> dict:
    good = sim.definitions()
    broken = copy.deepcopy(good)
    for item in broken[kind]:
        if item["discriminator"] == old:
            item["discriminator"] = old + "-renamed"
    sim.set_definitions(broken)
    return good


def test_a_section_gone_is_not_a_profile_gone(sim: ApsisSimulator) -> None:
    cfg = config_from_dict(TWO)
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=cfg.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(cfg, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, {**person(7), "profiles": [12, 13]}, None).result == "synced"  # opted in to both
    before = store.get(cfg.integration_id, 7)
    good = _renamed(sim, "sections", cfg.apsis.section)
    left = {**person(7, stamp="2024-05-02T10:00:00"), "profiles": [12]}  # left the events CRM profile
    with pytest.raises(MappingGone):
        syncer.sync(7, left, before)
    after = store.get(cfg.integration_id, 7)
    assert after is not None and after.exists_in_apsis
    assert (after.consents, after.attribute_hashes, after.tags) == (
        before.consents,
        before.attribute_hashes,
        before.tags,
    )
    sim.set_definitions(good)  # fixed by an admin; the queue retries the change
    assert syncer.sync(7, left, store.get(cfg.integration_id, 7)).result == "synced"
    held = sim.get_profile(CRM, "7")
    assert held is not None and (EVENTS, "opt-out") in {(c["topic"], c["type"]) for c in held["consents"]}


def test_a_delete_meeting_a_keyspace_gone_is_not_recorded_as_done(sim: ApsisSimulator) -> None:
    cfg = config_from_dict({**RAW, "on_delete": "delete"})
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=cfg.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(cfg, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, person(7), None).result == "synced"
    good = _renamed(sim, "keyspaces", CRM)
    with pytest.raises(MappingGone):
        syncer.sync(7, None, store.get(cfg.integration_id, 7))  # deleted in Efficy
    state = store.get(cfg.integration_id, 7)
    assert state is not None and state.exists_in_apsis and state.last_outcome != "deleted"
    sim.set_definitions(good)
    assert syncer.sync(7, None, store.get(cfg.integration_id, 7)).result == "deleted"
    assert sim.get_profile(CRM, "7") is None
