"""A mapped attribute deleted in APSIS One fails the integration, not every person: the change is not recorded
on the person nor acknowledged (the real PersonSyncer and ApsisClient against the APSIS simulator)."""

from __future__ import annotations

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import MappingGone
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, FIRSTNAME, apsis_sim, person  # noqa: F401
from tests.memory_store import MemoryPersonStateStore


def test_a_deleted_mapped_attribute_is_raised_and_not_recorded_on_the_person(apsis_sim: ApsisSimulator) -> None:
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, person(7), None).result == "synced"
    definitions = apsis_sim.definitions()
    for section in definitions["sections"]:
        section["attributes"] = [a for a in section["attributes"] if a["discriminator"] != FIRSTNAME]
    apsis_sim.set_definitions(definitions)
    before = store.get(CFG.integration_id, 7)

    with pytest.raises(MappingGone):  # the worker reports the message failed: SQS retries it, then the DLQ
        syncer.sync(7, {**person(7, "2024-05-02T10:00:00"), "FIRSTNAME": "Renamed"}, before)

    after = store.get(CFG.integration_id, 7)
    assert after.last_outcome == "synced" and after.error_category is None  # nothing recorded as the person's
    assert after.attribute_hashes == before.attribute_hashes  # the rename is still to be sent
    assert apsis_sim.get_profile(CRM, "7")["attributes"][FIRSTNAME] == "F7"
