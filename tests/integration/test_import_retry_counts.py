"""A file's import was applied and its rows' states stored, then one of the file's per-person rows (a change an
import cannot carry: a cleared attribute) met an APSIS outage: `_file` raised before it reported its counters,
and the state machine's retry sent the file's persons again, the imported ones now unchanged, under the same
token: the report said 1 person updated where the run updated 30. The import's counts are recorded before the
error goes up, and a retry counts only its new work (census counted once)."""

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
from tests.memory_store import MemoryPersonStateStore


class RunCounters:
    """The run's counters with RunStore.add_once semantics (a token counts once)."""

    def __init__(self) -> None:
        self.tokens: set[str] = set()
        self.total: Counter[str] = Counter()

    def __call__(self, token: str, counters: Any) -> bool:
        if token in self.tokens:
            return False
        self.tokens.add(token)
        self.total.update({k: v for k, v in counters.items() if v})
        return True


def test_a_retried_file_still_counts_the_persons_its_first_attempt_updated(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 31)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})

    # everyone's first name changes (import rows); person 5's mobile is also cleared (per person: an empty
    # import cell would leave it unchanged)
    world["efficy_sim"].upsert_persons(
        [{**person(k, [12]), "FIRSTNAME": f"G{k}", **({"MOBILE": None} if k == 5 else {})} for k in range(1, 31)]
    )
    queued = [QueuedPage(0, 0, 30, tuple(range(1, 31)))]
    counters = RunCounters()

    def step() -> dict[str, Any]:  # one call of the Imports step (import_step.imports_step's wiring)
        return Collector(
            CFG, efficy=world["efficy"], apsis=world["apsis"], states=states,
            syncer=PersonSyncer(CFG, world["apsis"], states, dry_run=False, email_lookup=lambda address: []),
            import_rows=100, on_counters=counters, poll_interval=0.01,
        ).run(queued, {}, start=0)  # fmt: skip

    # APSIS is down for person 5's per-person write (every retry of the client too)
    sim.add_fault(path_regex=r"/profiles/5/", method="PATCH", status=503, count=50)
    with pytest.raises(ApsisUnavailable):
        step()
    sim.clear_faults()
    done = step()  # the state machine's Retry: same input (start 0)

    assert not done["more"]
    names = {
        k: (sim.get_profile("com.apsis1.keyspaces.crm-id", str(k)) or {}).get("attributes", {}) for k in (1, 5, 30)
    }
    assert all(a.get("com.apsis1.attributes.firstname") == f"G{k}" for k, a in names.items()), names
    assert counters.total["updated"] == 30, (
        f"the run updated 30 persons in APSIS; its counters say updated={counters.total['updated']}, "
        f"unchanged={counters.total['unchanged']}, imports={counters.total['imports']}"
    )
    assert counters.total["persons"] == 30 and counters.total["unchanged"] == 0  # nobody counted twice
