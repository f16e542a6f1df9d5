"""A person deleted in Efficy stays deleted: a snapshot read before the delete, applied after it, is older.

The tombstone kept the read times of the snapshot before it (a delete has no record to carry its own), so a
snapshot read between that one and the delete looked newer than the tombstone (read clearly after its answer)
and was applied: the APSIS profile the delete had just removed was created again, with the CRM's opt-ins, for a
person Efficy no longer has, and nothing ever removed it (Efficy sends no second delete). Such a late snapshot
comes from any writer that does not queue behind the person's FIFO group: the opt-out write-back's step 5, the
pages of a cancelled full sync still winding down. The tombstone now carries when the delete was seen.

The real PersonSyncer and clients against both simulators over HTTP, the real PersonStateStore on moto.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.config import config_from_dict
from efficy_sync.consent import READ_ORDER_SLACK
from efficy_sync.mapping import needed_fields
from efficy_sync.sync import PersonSyncer

from tests.integration.test_diff_calls import CRM, FAST, RAW
from tests.support import simulated_apis

CFG = config_from_dict({**RAW, "integration_id": "deleteorder", "on_delete": "delete"})


@pytest.fixture
def world(in_process_aws: str) -> Iterator[dict[str, Any]]:
    persons = [{"K_CONTACT": 7, "NAME": "N7", "FIRSTNAME": "F7", "EMAIL1": "d7@example.com", "profiles": [12]}]
    with simulated_apis(in_process_aws, persons, "del", FAST) as world:
        apsis = ApsisClient(world["asim"].url, "del", "del-secret", section=CFG.apsis.section, policy=FAST)
        yield {**world, "syncer": PersonSyncer(CFG, apsis, world["states"], email_lookup=lambda _: [])}


def read(world: dict[str, Any], key: int) -> dict[str, Any] | None:
    time.sleep(READ_ORDER_SLACK.total_seconds() + 0.05)  # each read clearly after the one before
    return world["efficy"].get_persons([key], needed_fields(CFG)).get(key)


def sync(world: dict[str, Any], key: int, person: dict[str, Any] | None) -> Any:
    return world["syncer"].sync(key, person, world["states"].get(CFG.integration_id, key))


def test_a_snapshot_read_before_the_delete_does_not_bring_the_profile_back(world: dict[str, Any]) -> None:
    assert sync(world, 7, read(world, 7)).result == "synced"
    world["esim"].upsert_persons([{"K_CONTACT": 7, "FIRSTNAME": "G7"}])  # an edit: a webhook, queued
    late = read(world, 7)  # the write-back (or a winding-down page) reads the person here...
    assert late is not None

    world["esim"].delete_person(7)  # ...the person is deleted in Efficy...
    assert read(world, 7) is None
    assert sync(world, 7, None).result == "deleted"  # ...and the worker applies the delete
    assert world["asim"].get_profile(CRM, "7") is None

    outcome = sync(world, 7, late)  # then the snapshot read before the delete lands

    assert not outcome.operations, outcome
    assert world["asim"].get_profile(CRM, "7") is None, "a person deleted in Efficy was created again in APSIS"
    assert not world["states"].get(CFG.integration_id, 7).exists_in_apsis


def test_the_late_snapshot_leaves_the_tombstone_as_it_is(world: dict[str, Any]) -> None:
    """The older snapshot is not stored over the tombstone either: it kept the tombstone's read times, so the
    store took it, and the person deleted in Efficy read "synced" in health and explain."""
    assert sync(world, 7, read(world, 7)).result == "synced"
    late = read(world, 7)
    world["esim"].delete_person(7)
    assert read(world, 7) is None
    assert sync(world, 7, None).result == "deleted"
    tombstone = world["states"].get(CFG.integration_id, 7)

    assert sync(world, 7, late).result == "unchanged"

    stored = world["states"].get(CFG.integration_id, 7)
    assert (stored.last_outcome, stored.revision) == ("deleted", tombstone.revision)
