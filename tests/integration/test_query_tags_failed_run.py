"""Query tags a run set are taken away once their persons leave the query, even when that run failed before its
Tags step ended. The Imports step sets query tags through tag columns (and records them in the persons' states),
but the member snapshot that untagging relies on was written only by the Tags step's last call: a run that
failed or was cancelled after the Imports step left tags in APSIS and in our states with no snapshot naming
those persons, and no later run untagged them (untags are the snapshot's former members). The snapshot now
names the members before any tag goes out (tags.widen_snapshot). Real Collector, ImportWriter, PersonSyncer,
plan_query_tags and mirror_query_tags against the simulators."""

from __future__ import annotations

from typing import Any

from efficy_sync.config.model import QueryTag
from efficy_sync.fullsync.collect import Collector
from efficy_sync.fullsync.tags import mirror_query_tags, plan_query_tags
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    person,
    queue_pages,
    world,
)
from tests.memory_store import MemoryPersonStateStore

QUERY = 3618
CFG_Q = CFG.model_copy(update={"tags": CFG.tags.model_copy(update={"queries": [QueryTag(query=QUERY, tag="vip")]})})


class Snapshots:
    """In-memory member snapshots (the protocol of store/query_members.QueryMembersStore)."""

    def __init__(self) -> None:
        self.data: dict[int, set[int]] = {}

    def previous(self, integration_id: str, query: int, tag: str) -> set[int] | None:
        return self.data.get(query)

    def put(
        self, integration_id: str, query: int, members: set[int], *, run_id: str, tags: Any = (), widened: bool = False
    ) -> None:
        self.data[query] = set(members)


def tagged(world: dict[str, Any]) -> set[int]:
    return {int(p["key"]) for p in world["apsis_sim"].profiles() if "vip" in p["tags"]}


def imports_step(world: dict[str, Any], states: MemoryPersonStateStore, members: Snapshots, queued: Any) -> None:
    changes = plan_query_tags(CFG_Q, world["efficy"].run_query, states, members, "run-1")
    Collector(
        CFG_Q, efficy=world["efficy"], apsis=world["apsis"], states=states,
        syncer=PersonSyncer(CFG_Q, world["apsis"], states, dry_run=False, email_lookup=lambda address: []),
        import_rows=100, on_counters=lambda token, counters: None, poll_interval=0.01,
    ).run(queued, changes)  # fmt: skip


def tags_step(world: dict[str, Any], states: MemoryPersonStateStore, members: Snapshots) -> dict[str, Any]:
    return mirror_query_tags(
        CFG_Q, run_query=world["efficy"].run_query, apsis=world["apsis"], states=states, members=members,
        dry_run=False, run_id="run-2",
    )  # fmt: skip


def test_query_tags_an_import_set_in_a_run_that_then_failed_are_taken_away_when_members_leave(
    world: dict[str, Any],
) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    world["efficy_sim"].set_queries([{"K_QUERY": QUERY, "name": "VIP", "members": list(range(1, 21))}])
    states, members = MemoryPersonStateStore(), Snapshots()

    # run 1 (import mode, first load): the Imports step tags 1..20 through the file's tag column ...
    imports_step(world, states, members, queue_pages(world, states, pages=1, size=60))
    assert tagged(world) == set(range(1, 21))
    assert all(states.get(CFG.integration_id, k).tags.get("vip") for k in range(1, 21))
    # ... then the run fails before the Tags step finishes (e.g. Efficy's query read down past the retries,
    # or a cancel): no snapshot is written

    # persons 1..10 leave the VIP query; run 2 succeeds
    world["efficy_sim"].set_queries([{"K_QUERY": QUERY, "name": "VIP", "members": list(range(11, 21))}])
    imports_step(world, states, members, [])  # nobody else changed: no file but the tags-only one
    tags_step(world, states, members)

    assert tagged(world) == set(range(11, 21)), (
        f"{len(tagged(world) - set(range(11, 21)))} former VIPs keep the tag that our states say we set"
    )
