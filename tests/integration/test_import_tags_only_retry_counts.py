"""The tags-only file of the Imports step, in several imports of `import_rows` rows, failed on its second import
(APSIS 5xx on create) and the state machine retried the step. The retry re-planned from the states, so the rows
the first import tagged were left out and the rest were re-chunked from 0: their first chunk reused the token
`import-tags-<n>-0` the first attempt had counted, and its counts were dropped (30 tagged, 20 counted). A chunk's
token is now named by its persons."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.fullsync.collect import Collector
from efficy_sync.fullsync.tags import plan_query_tags
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.integration.test_import_retry_counts import RunCounters
from tests.integration.test_query_tags_failed_run import CFG_Q, QUERY, Snapshots, tagged
from tests.memory_store import MemoryPersonStateStore


def test_a_retried_tags_only_file_counts_every_tag_it_sent(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 31)])
    states, members = MemoryPersonStateStore(), Snapshots()
    # an earlier run loaded everyone (no query tag then)
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})
    # now all 30 join the VIP query; nobody else changed: the Imports step has only the tags-only file
    world["efficy_sim"].set_queries([{"K_QUERY": QUERY, "name": "VIP", "members": list(range(1, 31))}])

    real_create = world["apsis"].create_import
    calls = {"n": 0}

    def create_import(spec: dict[str, Any]) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second import of the tags-only file: APSIS answers 5xx past the retries
            raise ApsisUnavailable("APSIS create import: 503")
        return real_create(spec)

    monkeypatch.setattr(world["apsis"], "create_import", create_import)
    counters = RunCounters()

    def step() -> dict[str, Any]:  # one call of the Imports step (import_step.imports_step's wiring)
        changes = plan_query_tags(CFG_Q, world["efficy"].run_query, states, members, "run-2")
        return Collector(
            CFG_Q, efficy=world["efficy"], apsis=world["apsis"], states=states,
            syncer=PersonSyncer(CFG_Q, world["apsis"], states, dry_run=False, email_lookup=lambda address: []),
            import_rows=10, on_counters=counters, poll_interval=0.01,
        ).run([], changes, start=0)  # fmt: skip

    with pytest.raises(ApsisUnavailable):
        step()  # first attempt: chunk 0 (10 rows) imported and counted, chunk 1 fails
    done = step()  # the state machine's Retry: same input, previous = {} (start 0)

    assert not done["more"]
    assert tagged(world) == set(range(1, 31))
    assert counters.total["tag+:vip"] == 30 and counters.total["import_tag_rows"] == 30, (
        f"APSIS tagged 30 persons, the run counted tag+:vip={counters.total['tag+:vip']}, "
        f"import_tag_rows={counters.total['import_tag_rows']}, imports={counters.total['imports']}"
    )
