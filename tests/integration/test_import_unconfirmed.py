"""An import that never reports back may still be applied by APSIS One later, after the run has failed or been
cancelled (APSIS's processing time is not documented). The persons' states must then say that what the file
sent is unknown, a new person included, so that a membership withdrawn in the CRM afterwards is withdrawn in
APSIS too. Before, no state was written: APSIS applied the file's opt-ins later, the state knew nothing of
them, and a person who then left the CRM profile was never opted out. Real Collector, ImportWriter, page
worker and PersonSyncer against the Efficy and APSIS simulators over HTTP (fixtures of test_import_layout)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.config import EMAIL_ATTRIBUTE
from efficy_sync.fullsync.collect import QueuedPage, read_file_persons
from efficy_sync.fullsync.import_writer import ImportWriter
from efficy_sync.fullsync.page import sync_page
from efficy_sync.mapping import needed_fields
from efficy_sync.state import UNKNOWN, UNSURE_CHANGE

from tests.integration.test_import_existing_optouts import PERSONS, _opted_out_elsewhere
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

SLOT = f"{NEWS}|email"


def _status_never_reported(world: dict[str, Any]) -> None:
    """APSIS applies the file (the simulator processes it) but every status poll says it is still running."""
    world["apsis_sim"].add_fault(
        path_regex=r"/imports/[^/]+$", method="GET", status=200, content_type="application/json",
        body=json.dumps({"result": {"status": "in_progress"}}),
    )  # fmt: skip


def _applied(world: dict[str, Any], key: int, consents: set[tuple[str, str, str]]) -> None:
    """Waits (bounded) until the simulator has applied the file: it does so on a timer thread of its own,
    which a loaded machine may run after our wait gave up."""
    deadline = time.monotonic() + 15
    while consents_of(world, key) != consents and time.monotonic() < deadline:
        time.sleep(0.05)
    assert consents_of(world, key) == consents


def _full_sync(world: dict[str, Any], states: MemoryPersonStateStore) -> None:
    """A later run: the page diffs (sending per person what an import cannot carry), the collector imports."""
    queued: list[QueuedPage] = []
    descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": True}
    result = sync_page(
        CFG, descriptor, efficy=world["efficy"], apsis=world["apsis"], states=states, dry_run=False,
        write_mode="import", max_concurrency=5,
        queue=lambda efficy_page, page_size, keys: queued.append(QueuedPage(0, efficy_page, page_size, tuple(keys))),
    )  # fmt: skip
    assert result.counters.get("failed", 0) == 0, result.counters
    collector(world, states, rows=100, counted=[]).run(queued, {})


@pytest.mark.parametrize("active", [True, False], ids=["run-active", "run-ended"])
def test_a_file_that_never_reports_back_leaves_states_that_withdraw_a_later_removal(
    world: dict[str, Any], active: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")  # the later run goes person by person: unpaced here
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    queued = queue_pages(world, states, pages=1, size=60)
    _status_never_reported(world)
    stuck = collector(world, states, rows=100, counted=[])
    stuck.should_continue = lambda: active  # ended: a cancel while the file imported (conditional puts)

    with pytest.raises(ApsisUnavailable):
        stuck._file("f", read_file_persons(CFG, world["efficy"], queued), {}, timeout=0.3)

    world["apsis_sim"].clear_faults()
    _applied(world, 7, {(NEWS, "email", "opt-in")})  # APSIS applied the file all the same
    stored = states.get_many(CFG.integration_id, range(1, 61))
    assert len(stored) == 60, "a person the file created has no state: its opt-in is known to nobody"
    assert all(s.consents == {SLOT: UNKNOWN} and s.exists_in_apsis for s in stored.values())
    assert all(s.last_outcome != "synced" for s in stored.values())

    world["efficy_sim"].patch_person(7, {}, profiles=[])  # person 7 leaves the CRM profile
    _full_sync(world, states)

    assert consents_of(world, 7) == {(NEWS, "email", "opt-out")}
    assert consents_of(world, 8) == {(NEWS, "email", "opt-in")}
    assert states.get(CFG.integration_id, 7).consents == {SLOT: "opt-out"}
    assert states.get(CFG.integration_id, 8).consents == {SLOT: "opt-in"}


def test_a_person_with_a_state_has_only_what_the_file_sent_marked_unknown(world: dict[str, Any]) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=60), {})
    before = states.get(CFG.integration_id, 9)
    assert before.consents == {SLOT: "opt-in"}
    # a first name changes for everyone: the file carries attributes only
    world["efficy_sim"].upsert_persons([{**person(k, [12]), "FIRSTNAME": f"G{k}"} for k in range(1, 61)])
    queued = queue_pages(world, states, pages=1, size=60)
    _status_never_reported(world)

    with pytest.raises(ApsisUnavailable):
        collector(world, states, rows=100, counted=[])._file(
            "f", read_file_persons(CFG, world["efficy"], queued), {}, timeout=0.3
        )

    after = states.get(CFG.integration_id, 9)
    assert after.consents == {SLOT: "opt-in"}  # not in the file: still known
    # in the file: sent again (a value we knew before: UNSURE_CHANGE and its hash)
    firstname = "com.apsis1.attributes.firstname"
    assert after.attribute_hashes[firstname] == UNSURE_CHANGE + before.attribute_hashes[firstname]
    # the address the file carried is the one we knew: held either way, so no per-person e-mail check follows
    assert after.attribute_hashes[EMAIL_ATTRIBUTE] == before.attribute_hashes[EMAIL_ATTRIBUTE]
    assert after.change_stamp == before.change_stamp and after.revision > before.revision


def test_the_page_import_path_marks_its_rows_too(world: dict[str, Any]) -> None:
    """Import mode without the collector (ImportWriter.write: a page that imports its own rows) takes the same
    care."""
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    persons = list(world["efficy"].get_persons(list(range(1, 61)), needed_fields(CFG)).values())
    _status_never_reported(world)
    writer = ImportWriter(CFG, world["apsis"], states, poll_interval=0.01, timeout=0.3)

    with pytest.raises(ApsisUnavailable):
        writer.write(persons, {}, lambda rest: pytest.fail("nothing goes person by person"))

    stored = states.get_many(CFG.integration_id, range(1, 61))
    assert len(stored) == 60 and all(s.consents == {SLOT: UNKNOWN} for s in stored.values())


def test_a_retry_after_a_file_that_never_reported_back_keeps_the_opt_outs_apsis_held(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every person is a CRM member and APSIS already holds their opt-out (made before the integration): the
    file never resubscribes, so it kept them. Marked "unknown", the slots were no longer first opt-ins: the
    retry sent each opt-in person by person without the read that finds such an opt-out, and overwrote them."""
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    _opted_out_elsewhere(world)
    states = MemoryPersonStateStore()
    queued = queue_pages(world, states, pages=1, size=60)
    _status_never_reported(world)
    with pytest.raises(ApsisUnavailable):
        collector(world, states, rows=100, counted=[])._file(
            "f", read_file_persons(CFG, world["efficy"], queued), {}, timeout=0.3
        )
    world["apsis_sim"].clear_faults()
    assert all((NEWS, "email", "opt-in") not in consents_of(world, k) for k in PERSONS)  # the file kept them

    _full_sync(world, states)  # the retried step, or the next run

    assert [k for k in PERSONS if (NEWS, "email", "opt-in") in consents_of(world, k)] == []


def test_the_page_import_path_retried_keeps_the_opt_outs_apsis_held(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    _opted_out_elsewhere(world)
    states = MemoryPersonStateStore()
    persons = list(world["efficy"].get_persons(list(PERSONS), needed_fields(CFG)).values())
    _status_never_reported(world)
    with pytest.raises(ApsisUnavailable):
        ImportWriter(CFG, world["apsis"], states, poll_interval=0.01, timeout=0.3).write(persons, {}, lambda r: [])
    world["apsis_sim"].clear_faults()
    descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": True}
    sync_page(
        CFG,
        descriptor,
        efficy=world["efficy"],
        apsis=world["apsis"],
        states=states,
        dry_run=False,
        write_mode="import",
        max_concurrency=5,
    )  # fmt: skip  (the state machine retries the page)
    assert [k for k in PERSONS if (NEWS, "email", "opt-in") in consents_of(world, k)] == []


def test_a_tags_only_file_that_never_reports_back_leaves_its_tags_to_be_taken_away(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last file of a run tags persons who joined a query without changing otherwise. It wrote no state when
    it never reported back, so a tag APSIS set later was never taken away when they left the query."""
    from efficy_sync.fullsync import collect

    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 21)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=20), {})
    _status_never_reported(world)
    monkeypatch.setattr(collect, "IMPORT_TIMEOUT", 0.3)

    with pytest.raises(ApsisUnavailable):
        collector(world, states, rows=100, counted=[]).run([], {k: {"vip": True} for k in range(1, 21)})

    stored = states.get_many(CFG.integration_id, range(1, 21))
    assert all(s.tags == {"vip": True} for s in stored.values()), "a tag the file may set is known to nobody"
    assert all(s.consents == {SLOT: "opt-in"} for s in stored.values())  # what the file did not carry: kept
