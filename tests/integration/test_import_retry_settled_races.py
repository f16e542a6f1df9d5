"""The rows of a file whose import-state write was refused (a newer sync stored them meanwhile) are synced again
one by one (Collector._settle_races). Two defects around them, both met when another person's outage failed the
Imports step and the state machine retried it:
- they were counted into a Counter of their own, lost when one of them met the outage: the retry found the
  finished person stored and unchanged and dropped them as counted (person 8, updated by the run, was missing:
  persons=29, updated=29 for 30 updated);
- they were settled only after the file's other per-person rows: an outage among those went up first and left
  the raced rows unmarked, so the newer stored state never learnt that APSIS held the file's older values, and
  the retry, finding that state equal to the CRM, sent nothing (APSIS kept the value the CRM had replaced)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.consent import read_time
from efficy_sync.fullsync.collect import Collector, QueuedPage
from efficy_sync.state import PersonState, value_hash
from efficy_sync.store.person_items import state_document
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

RACED = (8, 9)
FIRSTNAME = "com.apsis1.attributes.firstname"


class RacedStates(MemoryPersonStateStore):
    """A real-time sync stores persons 8 and 9 (a newer read) while the file imports, once; `newer` says what
    it stored for a person (default: the state as it was, from a later read)."""

    raced = False
    newer: dict[int, dict[str, Any]] = {}

    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        if not self.raced and {int(s.person_key) for s in states} >= set(RACED):
            self.raced = True
            time.sleep(0.3)
            now = read_time()
            for key in RACED:
                stored = self.get(CFG.integration_id, key)
                assert stored is not None
                newer = stored.model_copy(update={"asked_at": now, "answered_at": now, **self.newer.get(key, {})})
                with self._lock:
                    revision = self._states[(CFG.integration_id, key)][1]
                    self._states[(CFG.integration_id, key)] = (state_document(newer), revision + 1)
            time.sleep(0.3)
        return super().put_batch(states, workers=workers)


def loaded(world: dict[str, Any]) -> RacedStates:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 31)])
    states = RacedStates()
    states.raced = True  # not while loading
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})
    states.raced = False
    return states


def stepper(world: dict[str, Any], states: RacedStates, counters: RunCounters) -> Any:
    queued = [QueuedPage(0, 0, 30, tuple(range(1, 31)))]

    def step() -> dict[str, Any]:  # one call of the Imports step (import_step.imports_step's wiring)
        return Collector(
            CFG, efficy=world["efficy"], apsis=world["apsis"], states=states,
            syncer=PersonSyncer(CFG, world["apsis"], states, dry_run=False, email_lookup=lambda address: []),
            import_rows=100, on_counters=counters, poll_interval=0.01,
        ).run(queued, {}, start=0)  # fmt: skip

    return step


def test_a_retry_still_counts_a_settled_race_row_its_first_attempt_synced(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    states = loaded(world)
    world["efficy_sim"].upsert_persons([{**person(k, [12]), "FIRSTNAME": f"G{k}"} for k in range(1, 31)])
    counters = RunCounters()
    step = stepper(world, states, counters)

    sim.add_fault(path_regex=r"/profiles/9/", method="PATCH", status=503, count=50)  # only person 9 meets it
    with pytest.raises(ApsisUnavailable):
        step()
    assert states.raced
    sim.clear_faults()
    step()  # the state machine's Retry

    for k in RACED:
        attrs = sim.get_profile("com.apsis1.keyspaces.crm-id", str(k))["attributes"]
        assert attrs.get(FIRSTNAME) == f"G{k}"
    total = Counter(counters.total)
    assert total["persons"] == 30 and total["updated"] == 30, (
        f"30 persons read and updated; the report says persons={total['persons']}, updated={total['updated']}, "
        f"unchanged={total['unchanged']}, stale={total['stale']}"
    )


def test_raced_rows_are_settled_even_when_another_rows_outage_fails_the_step(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    states = loaded(world)
    # everyone's first name changes (import rows); person 5's mobile is also cleared (per person)
    world["efficy_sim"].upsert_persons(
        [{**person(k, [12]), "FIRSTNAME": f"G{k}", **({"MOBILE": None} if k == 5 else {})} for k in range(1, 31)]
    )
    # while the file imports, the CRM renames person 8 again and a newer sync stores that (its call reached
    # APSIS before the file's import applied G8: APSIS holds G8, the stored state says H8)
    original_put_batch = states.put_batch

    def racing(batch: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        if not states.raced:
            world["efficy_sim"].upsert_persons([{**person(8, [12]), "FIRSTNAME": "H8"}])
            stored = states.get(CFG.integration_id, 8)
            assert stored is not None
            states.newer = {8: {"attribute_hashes": {**stored.attribute_hashes, FIRSTNAME: value_hash("H8")}}}
        return original_put_batch(batch, workers=workers)

    states.put_batch = racing  # type: ignore[method-assign]
    counters = RunCounters()
    step = stepper(world, states, counters)

    sim.add_fault(path_regex=r"/profiles/5/", method="PATCH", status=503, count=50)  # only person 5 meets it
    with pytest.raises(ApsisUnavailable):
        step()
    assert states.raced
    sim.clear_faults()
    step()  # the state machine's Retry

    attrs = sim.get_profile("com.apsis1.keyspaces.crm-id", "8")["attributes"]
    assert attrs.get(FIRSTNAME) == "H8", f"APSIS keeps the file's {attrs.get(FIRSTNAME)}; the CRM says H8"
    assert counters.total["persons"] == 30
