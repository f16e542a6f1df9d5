"""Import mode into an account that already holds opt-outs (a migration from another connector): the files
never resubscribe an opt-out, and neither may the persons who leave the file path and are synced one by one
(rows an import report names, a file APSIS refuses whole). Real Collector, ImportWriter and PersonSyncer
against the Efficy and APSIS simulators over HTTP (fixtures of test_import_layout)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from efficy_sync.fullsync.page import sync_page

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    NEWS,
    collector,
    consents_of,
    person,
    queue_pages,
    world,
)
from tests.memory_store import MemoryPersonStateStore

PERSONS = range(1, 61)


def _opted_out_elsewhere(world: dict[str, Any]) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in PERSONS])  # all CRM members of NEWS's profile
    for key in PERSONS:
        world["apsis"].create_profile(str(key))
        world["apsis"].set_consent(str(key), NEWS, "email", "opt-out")


@pytest.mark.parametrize(
    "status",
    [
        {"status": "completed", "report": {"rows": 60, "failed": 1, "errors": [{"row": 20, "message": "bad"}]}},
        {"status": "error", "report": {"errors": [{"row": 0, "message": "refused"}]}},
    ],
    ids=["rows-named", "file-refused"],
)
def test_no_person_leaving_the_file_path_is_opted_in_over_an_opt_out_apsis_held(
    world: dict[str, Any],
    status: dict[str, Any],
) -> None:
    assert CFG.apsis.existing_optouts == "known_profiles" and CFG.full_sync.write_mode == "import"
    _opted_out_elsewhere(world)
    states = MemoryPersonStateStore()
    queued = queue_pages(world, states, pages=1, size=60)
    world["apsis_sim"].add_fault(
        path_regex=r"/imports/[^/]+$",
        method="GET",
        status=200,
        content_type="application/json",
        count=1,
        body=json.dumps({"result": status}),
    )
    collector(world, states, rows=100, counted=[]).run(queued, {})
    opted_in = [k for k in PERSONS if (NEWS, "email", "opt-in") in consents_of(world, k)]
    assert opted_in == []
    kept = [k for k in PERSONS if (s := states.get(CFG.integration_id, k)) is not None and s.optouts]
    assert kept, "the per-person path records the opt-outs it found (source apsis-existing)"


def test_a_dry_run_of_an_import_first_load_reads_no_consents_of_new_persons(world: dict[str, Any]) -> None:
    """The real run imports new persons without a read (an import never resubscribes); the preview read each
    one's consents, one APSIS call per new person: a preview of a million-person load far slower than it."""
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in PERSONS])
    descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": True}

    result = sync_page(
        CFG, descriptor, efficy=world["efficy"], apsis=world["apsis"], states=MemoryPersonStateStore(),
        dry_run=True, write_mode="import", max_concurrency=5,
    )  # fmt: skip

    assert result.counters["created"] == len(PERSONS)
    reads = {
        route: n for route, n in world["apsis_sim"].calls().items() if route.startswith("GET") and "consents" in route
    }
    assert reads == {}
