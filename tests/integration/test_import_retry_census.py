"""A retried Imports step lost the persons its first attempt synced one by one: the failure path counted only the
import's rows (the per-person rows that finished beside the one that met the outage were not in them), and the
retry dropped their now-unchanged outcomes as a census it took for counted: persons 6 and 7, updated by the run,
vanished from the report. Each per-person row is counted as it finishes, whatever the others do."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.fullsync.collect import Collector, QueuedPage
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.integration.test_import_retry_counts import RunCounters
from tests.memory_store import MemoryPersonStateStore


def test_a_retry_still_counts_the_per_person_rows_its_first_attempt_synced(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 31)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})

    # everyone's first name changes (import rows); persons 5, 6 and 7 also have their mobile cleared (per person)
    cleared = (5, 6, 7)
    world["efficy_sim"].upsert_persons(
        [{**person(k, [12]), "FIRSTNAME": f"G{k}", **({"MOBILE": None} if k in cleared else {})} for k in range(1, 31)]
    )
    queued = [QueuedPage(0, 0, 30, tuple(range(1, 31)))]
    counters = RunCounters()

    def step() -> dict[str, Any]:
        return Collector(
            CFG, efficy=world["efficy"], apsis=world["apsis"], states=states,
            syncer=PersonSyncer(CFG, world["apsis"], states, dry_run=False, email_lookup=lambda address: []),
            import_rows=100, on_counters=counters, poll_interval=0.01,
        ).run(queued, {}, start=0)  # fmt: skip

    sim.add_fault(path_regex=r"/profiles/5/", method="PATCH", status=503, count=50)  # only person 5 meets it
    with pytest.raises(ApsisUnavailable):
        step()
    sim.clear_faults()
    step()  # the state machine's Retry

    for k in cleared:  # the run did update all three
        attrs = sim.get_profile("com.apsis1.keyspaces.crm-id", str(k))["attributes"]
        assert attrs.get("com.apsis1.attributes.firstname") == f"G{k}"
    total = Counter(counters.total)
    assert total["persons"] == 30 and total["updated"] == 30, (
        f"30 persons read and updated; the report says persons={total['persons']}, updated={total['updated']}, "
        f"unchanged={total['unchanged']}"
    )
