"""An import upserts: a profile deleted in APSIS One behind our back (by hand, an erasure) is created again by
an import-mode full sync holding only the file's columns, while the stored state says the rest is there (diff
mode re-creates it whole: test_apsis_profile_gone.py). Which rows they were the import's report does not say;
how many it does (created beyond the rows we create). The run's counters and report say it, and name the repair
(reconcile --fix), instead of the run passing the half-empty profile off as synced in silence."""

from __future__ import annotations

from collections import Counter
from typing import Any

from efficy_sync.fullsync.collect import Collector, QueuedPage
from efficy_sync.fullsync.page import sync_page
from efficy_sync.fullsync.report import build_report, render_report
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import CFG, person, world  # noqa: F401  (world: fixture)
from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_fullsync_report import _run


def import_run(world: dict[str, Any], states: MemoryPersonStateStore) -> Counter[str]:
    queued: list[QueuedPage] = []
    sync_page(
        CFG, {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": True},
        efficy=world["efficy"], apsis=world["apsis"], states=states, dry_run=False, write_mode="import",
        max_concurrency=5, queue=lambda ep, size, keys: queued.append(QueuedPage(0, ep, size, tuple(keys))),
    )  # fmt: skip
    counters: Counter[str] = Counter()
    Collector(
        CFG, efficy=world["efficy"], apsis=world["apsis"], states=states,
        syncer=PersonSyncer(CFG, world["apsis"], states, dry_run=False, email_lookup=lambda a: []),
        import_rows=1000, on_counters=lambda token, c: counters.update(c), poll_interval=0.01,
    ).run(queued, {})  # fmt: skip
    return counters


def test_profiles_an_import_created_again_are_counted_and_reported(world: dict[str, Any]) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    first = import_run(world, states)
    assert first["created"] == 60 and first["import_recreated"] == 0

    for key in ("1", "2"):
        assert world["apsis"].delete_profile(key)  # deleted in APSIS One by hand
    world["efficy_sim"].upsert_persons([{**person(k, [12]), "FIRSTNAME": f"G{k}"} for k in range(1, 61)])
    counters = import_run(world, states)

    assert counters["import_recreated"] == 2
    run = _run(dict(counters), dry_run=False)
    text = "\n".join(render_report(build_report(run, status="succeeded")))
    assert "2 profiles the states said exist were created by the imports" in text and "reconcile" in text
