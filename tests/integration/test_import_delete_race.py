"""An import of a cancelled full sync, landing after real time applied a person's delete, is deleted again.

The Imports step uploaded its file while the run was active; the run was cancelled, the person deleted in
Efficy and the real-time worker deleted their APSIS profile; then APSIS applied the file, which creates a
profile it lacks. The file's state write was refused (the tombstone is newer), and its settling marked what the
file sent unknown on the tombstone, read the person again, found them gone and counted them "stale": the
profile the import created again, with the CRM's opt-in, stayed in APSIS One for a person Efficy no longer
has (no webhook comes again). Now the tombstone is told the profile exists and the delete is synced again.

The real Collector, ImportWriter, PersonSyncer and clients against both simulators over HTTP; the only test
device is the moment the cancel and the delete happen (inside the file's upload).
"""

from __future__ import annotations

import time
from typing import Any

from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.consent import READ_ORDER_SLACK
from efficy_sync.fullsync.collect import Collector, QueuedPage
from efficy_sync.mapping import needed_fields
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    FAST,
    SECTION,
    collector,
    person,
    queue_pages,
    world,
)
from tests.memory_store import MemoryPersonStateStore

DELETING = CFG.model_copy(update={"on_delete": "delete"})
CRM = "com.apsis1.keyspaces.crm-id"


class HeldUpload(ApsisClient):
    """The Imports step's client: `meanwhile` runs once, right before the file is uploaded."""

    meanwhile: Any = None

    def upload_import_file(self, *args: Any, **kwargs: Any) -> Any:
        if self.meanwhile is not None:
            hook, self.meanwhile = self.meanwhile, None
            hook()
        return super().upload_import_file(*args, **kwargs)


def test_a_cancelled_runs_import_does_not_bring_back_a_person_deleted_meanwhile(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    world["efficy_sim"].upsert_persons([person(k, []) for k in range(1, 31)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})
    assert sim.get_profile(CRM, "5") is not None
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 31)])  # all join: the next run imports
    worker = PersonSyncer(DELETING, world["apsis"], states, email_lookup=lambda _: [])
    held = HeldUpload(sim.url, "layout", "layout-secret", section=SECTION, policy=FAST)
    active = [True]

    def meanwhile() -> None:  # the run is cancelled; person 5 is deleted in Efficy and real time applies it
        active[0] = False
        time.sleep(READ_ORDER_SLACK.total_seconds() + 0.1)
        world["efficy_sim"].delete_person(5)
        assert world["efficy"].get_persons([5], needed_fields(DELETING)).get(5) is None
        assert worker.sync(5, None, states.get(DELETING.integration_id, 5)).result == "deleted"
        assert sim.get_profile(CRM, "5") is None

    held.meanwhile = meanwhile
    Collector(
        DELETING, efficy=world["efficy"], apsis=held, states=states,
        syncer=PersonSyncer(DELETING, held, states, dry_run=False, email_lookup=lambda address: []),
        import_rows=100, on_counters=lambda *_: None, poll_interval=0.01, should_continue=lambda: active[0],
    ).run([QueuedPage(0, 0, 30, tuple(range(1, 31)))], {}, start=0)  # fmt: skip

    assert held.meanwhile is None, "the file was never uploaded: the race was not exercised"
    assert sim.get_profile(CRM, "5") is None, "the import created the deleted person's profile again"
    assert not states.get(DELETING.integration_id, 5).exists_in_apsis
    assert sim.get_profile(CRM, "6") is not None  # the others imported
