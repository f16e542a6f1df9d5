"""An import of new persons that never reported back marks what it carried unsure (UNSURE_HASH), the e-mail
address included: the retried Imports step read each person's address as "changed", refused every row for the
import, and sent the whole file person by person, each with an Efficy e-mail look-up (20,000 with the default
file size). An unsure hash is no earlier address: the retry imports the file again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.fullsync.collect import Collector, read_file_persons
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.memory_store import MemoryPersonStateStore


def test_a_file_retried_after_it_never_reported_back_is_imported_again(world: dict[str, Any]) -> None:
    world["efficy_sim"].upsert_persons([person(k, []) for k in range(1, 61)])  # in no CRM profile: no consent
    states = MemoryPersonStateStore()
    queued = queue_pages(world, states, pages=1, size=60)
    world["apsis_sim"].add_fault(  # APSIS applies the file, every status poll says it is still running
        path_regex=r"/imports/[^/]+$", method="GET", status=200, content_type="application/json",
        body=json.dumps({"result": {"status": "in_progress"}}),
    )  # fmt: skip
    with pytest.raises(ApsisUnavailable):
        collector(world, states, rows=100, counted=[])._file(
            "f", read_file_persons(CFG, world["efficy"], queued), {}, timeout=0.3
        )
    world["apsis_sim"].clear_faults()

    looked_up: list[str] = []
    counted: list[Any] = []
    retry = Collector(
        CFG, efficy=world["efficy"], apsis=world["apsis"], states=states,
        syncer=PersonSyncer(CFG, world["apsis"], states, dry_run=False,
                            email_lookup=lambda address: looked_up.append(address) or []),
        import_rows=100, on_counters=lambda token, c: counted.append((token, c)), poll_interval=0.01,
    )  # fmt: skip
    retry._file("f", read_file_persons(CFG, world["efficy"], queued), {}, timeout=30)

    imported = sum(c.get("import_rows", 0) for _, c in counted)
    assert imported == 60 and not looked_up, (
        f"the retry imported {imported} of 60 rows; the others went person by person with "
        f"{len(looked_up)} Efficy e-mail look-ups (first addresses, never changed)"
    )
