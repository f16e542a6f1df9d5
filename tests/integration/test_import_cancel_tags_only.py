"""A cancel ends the run while the Imports step's last file imports: no tags-only file starts after it. README:
"no new chunk or file starts" after a cancel (the parked real-time changes apply again); the Tags step stops
tagging between batches for the same reason. The Imports step still started its tags-only file, sending tag
changes planned from this run's query reads after the run had ended.
Real Collector, ImportWriter, PersonSyncer against the simulators (fixtures of test_import_layout)."""

from __future__ import annotations

from typing import Any

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


def test_no_tags_only_file_starts_after_a_cancel(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 41)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=40), {})
    # persons 1..20 change (one file); 21..40 did not change but joined the VIP query (a tags-only row each)
    world["efficy_sim"].upsert_persons([{**person(k, [12]), "FIRSTNAME": f"G{k}"} for k in range(1, 21)])
    queued = [QueuedPage(0, 0, 40, tuple(range(1, 21)))]
    imports_before = len(sim.imports())
    asked = iter([True])  # active when the file starts; cancelled while it imports (ended from then on)
    done = Collector(
        CFG, efficy=world["efficy"], apsis=world["apsis"], states=states,
        syncer=PersonSyncer(CFG, world["apsis"], states, dry_run=False, email_lookup=lambda address: []),
        import_rows=100, on_counters=lambda token, counters: None, poll_interval=0.01,
        should_continue=lambda: next(asked, False),
    ).run(queued, {k: {"vip": True} for k in range(21, 41)})  # fmt: skip

    started = len(sim.imports()) - imports_before
    tagged = [
        k
        for k in range(21, 41)
        if "vip" in (sim.get_profile("com.apsis1.keyspaces.crm-id", str(k)) or {}).get("tags", [])
    ]
    assert done.get("stopped") is True
    assert started == 1 and not tagged, (
        f"after the cancel the step started {started - 1} more import(s) and tagged {len(tagged)} persons; "
        f"answer {done}"
    )
