"""A page's batched state write never lands over a state the real-time worker stored in the moment before it.

Once a full sync ends (a cancel re-sends the parked changes at once), the real-time worker writes person states
while a page's chunks in flight are still written in batches (until the page notices the end). BatchWriteItem,
preceded by a revision read, overwrote a real-time state written between that read and the write: a CRM opt-out
withdrawn in that moment was lost (APSIS kept the page's older opt-in; the stored state agreed with it, so no
later sync withdrew it). The batch is now a conditional transaction: the real-time state stays and the page is
told the person's state was refused (the page then marks what it sent unknown and syncs them again from a
fresh read: page._settle, tested in test_page_batched_states.py).

The real PersonSyncer and ApsisClient against the APSIS One simulator over HTTP, the real PersonStateStore and
page BatchedStates on moto (in process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.fullsync.page_states import BatchedStates
from efficy_sync.state import PersonState
from efficy_sync.store import batch_writes
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.sync import PersonSyncer, reconcile_sent
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS, SLOT, person
from tests.support import create_pk_sk_table

KEY = 7


@pytest.fixture
def apsis_sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(client_id="race", client_secret="race-secret", rate_limits=False).start()
    yield sim
    sim.stop()


def consent(sim: ApsisSimulator) -> str | None:
    profile = sim.get_profile(CRM, str(KEY)) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


def snapshot(stamp: str, member: bool) -> dict[str, Any]:
    return {**person(KEY, stamp), "profiles": [12] if member else []}


def test_a_crm_opt_out_stored_by_real_time_just_before_a_page_batch_is_kept(
    in_process_aws: str, apsis_sim: ApsisSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_pk_sk_table("state", in_process_aws)
    store = PersonStateStore("state")
    apsis = ApsisClient(apsis_sim.url, "race", "race-secret", section=CFG.apsis.section, policy=FAST)
    plain = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    plain.sync(KEY, snapshot("2024-05-01T09:00:00", member=True), None)
    plain.sync(KEY, snapshot("2024-05-01T09:10:00", member=False), store.get(CFG.integration_id, KEY))
    assert consent(apsis_sim) == "opt-out"

    # a page reads the person back in the CRM profile (10:00) and sends the opt-in; its state waits in the batch
    batched = BatchedStates(store)
    page = PersonSyncer(CFG, apsis, batched, email_lookup=lambda address: [])
    sent = page.sync(KEY, snapshot("2024-05-01T10:00:00", member=True), store.get(CFG.integration_id, KEY), fresh=True)
    assert consent(apsis_sim) == "opt-in"

    # the CRM withdraws it (10:05) and the run is cancelled: real time applies the parked change and stores its
    # state right before the batch's own write (it sends nothing: the state it read already says opt-out)
    real = batch_writes._transact

    def real_time_first(table: str, states: list[PersonState]) -> bool:
        realtime = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
        realtime.sync(KEY, snapshot("2024-05-01T10:05:00", member=False), store.get(CFG.integration_id, KEY))
        return real(table, states)

    monkeypatch.setattr(batch_writes, "_transact", real_time_first)
    refused = batched.flush()

    stored = store.get(CFG.integration_id, KEY)
    assert KEY in refused  # the page learns it: it syncs the person again
    assert stored.change_stamp.startswith("2024-05-01T10:05")  # the real-time state, not the page's older one

    # what the page does with a refused person (page._settle): mark what it sent unknown, sync from a fresh read
    reconcile_sent(store, CFG.integration_id, KEY, list(sent.operations), "2024-05-01T10:06:00Z")
    again = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    again.sync(KEY, snapshot("2024-05-01T10:05:00", member=False), store.get(CFG.integration_id, KEY), fresh=True)
    assert consent(apsis_sim) == "opt-out"
    assert store.get(CFG.integration_id, KEY).consents[SLOT] == "opt-out"
