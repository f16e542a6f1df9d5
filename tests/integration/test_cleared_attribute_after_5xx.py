"""A CRM field emptied (person 5's mobile) goes person by person (an empty import cell would leave it unchanged).
Its PATCH met an APSIS 5xx: the call may have reached APSIS, so the state marked the attribute unknown by dropping
its hash; but a clear is sent only for an attribute whose hash is in the state (evidence that we set something),
so no later sync ever cleared it: the retried Imports step and every later full sync left the old mobile number
in APSIS One while the state said synced. An unsure attribute now keeps a hash no value has (UNSURE_HASH)."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.fullsync.collect import QueuedPage

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.integration.test_import_unconfirmed import _full_sync
from tests.memory_store import MemoryPersonStateStore

MOBILE = "com.apsis1.attributes.mobile"


def test_a_cleared_field_whose_patch_met_a_5xx_is_cleared_by_the_retry(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    sim = world["apsis_sim"]
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 31)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})
    assert sim.get_profile("com.apsis1.keyspaces.crm-id", "5")["attributes"][MOBILE] == "+32470000005"

    # person 5 has their mobile number removed from the CRM
    world["efficy_sim"].upsert_persons([{**person(5, [12]), "MOBILE": None}])
    queued = [QueuedPage(0, 0, 30, tuple(range(1, 31)))]
    sim.add_fault(path_regex=r"/profiles/5/", method="PATCH", status=503, count=50)  # APSIS down for it
    with pytest.raises(ApsisUnavailable):
        collector(world, states, rows=100, counted=[]).run(queued, {})
    sim.clear_faults()
    collector(world, states, rows=100, counted=[]).run(queued, {})  # the state machine's Retry
    _full_sync(world, states)  # and a later full sync too

    attributes = sim.get_profile("com.apsis1.keyspaces.crm-id", "5")["attributes"]
    assert MOBILE not in attributes or attributes[MOBILE] in (None, ""), (
        f"the CRM cleared person 5's mobile; APSIS One still holds {attributes[MOBILE]!r} after the retry and a "
        f"later full sync; stored hashes: {sorted(states.get(CFG.integration_id, 5).attribute_hashes)}"
    )
