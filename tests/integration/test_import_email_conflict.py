"""Import mode must hold back an e-mail change to an address another synced profile holds, as the per-person
path (real time, diff-mode full sync) does (sync.py docstring, "E-mail changes"): never merged silently."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.config import EMAIL_ATTRIBUTE
from efficy_sync.fullsync.collect import Collector
from efficy_sync.fullsync.page import sync_page
from efficy_sync.store.import_queue import QueuedPage
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    CRM,
    person,
    world,
)
from tests.memory_store import MemoryPersonStateStore

PERSONS = range(1, 61)  # above the import writer's minimum of 50 changed rows


def _page(world: dict[str, Any], states: MemoryPersonStateStore, mode: str) -> Any:
    descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": True}
    return sync_page(
        CFG, descriptor, efficy=world["efficy"], apsis=world["apsis"], states=states, dry_run=False,
        write_mode=mode, max_concurrency=5,
    )  # fmt: skip


def _imports_step(world: dict[str, Any], states: MemoryPersonStateStore) -> None:
    """A run in import mode as the state machine runs it: pages queue the keys, the Imports step imports."""
    queued: list[QueuedPage] = []
    descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": len(PERSONS), "tail": True}
    sync_page(
        CFG, descriptor, efficy=world["efficy"], apsis=world["apsis"], states=states, dry_run=False,
        write_mode="import", max_concurrency=5,
        queue=lambda efficy_page, page_size, keys: queued.append(QueuedPage(0, efficy_page, page_size, tuple(keys))),
    )  # fmt: skip
    syncer = PersonSyncer(
        CFG, world["apsis"], states, dry_run=False, email_lookup=world["efficy"].find_contacts_by_email
    )
    Collector(
        CFG, efficy=world["efficy"], apsis=world["apsis"], states=states, syncer=syncer, import_rows=1000,
        on_counters=lambda token, counters: None, poll_interval=0.01,
    ).run(queued, {})  # fmt: skip


@pytest.mark.parametrize("mode", ["diff", "import-page", "import-step"])
def test_an_address_another_profile_holds_is_held_back_in_every_write_mode(world: dict[str, Any], mode: str) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in PERSONS])
    states = MemoryPersonStateStore()
    _page(world, states, "import")  # the first load by import: quick, and the states know each address
    assert world["apsis_sim"].get_profile(CRM, "2")["attributes"][EMAIL_ATTRIBUTE] == "l2@example.com"

    # everyone's first name changes (so the run is worth an import); person 1 takes person 2's address
    changed = [{**person(k, [12]), "FIRSTNAME": f"G{k}"} for k in PERSONS]
    changed[0]["EMAIL1"] = "l2@example.com"
    world["efficy_sim"].upsert_persons(changed)
    if mode == "import-step":
        _imports_step(world, states)
    else:
        _page(world, states, "diff" if mode == "diff" else "import")

    state = states.get(CFG.integration_id, 1)
    assert state is not None and state.email_conflict is not None, f"{mode}: the conflict is not recorded"
    held = world["apsis_sim"].get_profile(CRM, "1")["attributes"].get(EMAIL_ATTRIBUTE)
    assert held != "l2@example.com", f"{mode}: profile 1 was given the address profile 2 holds"
