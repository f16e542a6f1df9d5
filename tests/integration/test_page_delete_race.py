"""A page of a cancelled full sync, still winding down, must not bring back a person real time just deleted.

The page planned the person's opt-in from its snapshot (a member); while that call was held (APSIS's rate
limit), the run was cancelled, the person deleted in Efficy and the real-time worker applied the delete (the
APSIS profile removed). The page's opt-in then met a 404, planned the person again as a new profile, and its
snapshot, read before the delete, looked newer than the tombstone (which kept the read times of the snapshot
before it): the profile was created again with the opt-in, for a person Efficy no longer has. The tombstone now
carries when the delete was seen (state_updates.deleted_state). Real page worker, PersonSyncer and clients
against the simulators over HTTP; the state store in DynamoDB (moto) and in memory."""

from __future__ import annotations

import time
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.config import config_from_dict
from efficy_sync.consent import READ_ORDER_SLACK
from efficy_sync.fullsync.page import sync_page
from efficy_sync.mapping import needed_fields
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import CRM, FAST, RAW, person
from tests.integration.test_page_settle import DESCRIPTOR, HeldApsis, sims, store  # noqa: F401

CFG = config_from_dict({**RAW, "on_delete": "delete"})


def test_a_winding_down_page_does_not_create_a_person_deleted_meanwhile(
    sims: tuple[EfficySimulator, ApsisSimulator],
    monkeypatch: pytest.MonkeyPatch,
    store: Any,
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    efficy_sim, apsis_sim = sims
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        worker = PersonSyncer(CFG, apsis, store, email_lookup=efficy.find_contacts_by_email)

        def realtime() -> None:
            worker.sync(1, efficy.get_persons([1], needed_fields(CFG)).get(1), store.get(CFG.integration_id, 1))

        efficy_sim.upsert_persons([{**person(1), "profiles": []}])
        realtime()
        efficy_sim.patch_person(1, {}, profiles=[12])  # joins the newsletter during the run (parked)

        def meanwhile() -> None:  # the run is cancelled; the person is deleted and real time applies it
            time.sleep(READ_ORDER_SLACK.total_seconds() + 0.1)  # the page's opt-in is held a while
            efficy_sim.delete_person(1)
            realtime()
            assert apsis_sim.get_profile(CRM, "1") is None

        page_apsis = HeldApsis(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
        page_apsis.meanwhile = meanwhile
        sync_page(CFG, DESCRIPTOR, efficy=efficy, apsis=page_apsis, states=store, dry_run=False)

    assert page_apsis.meanwhile is None, "the page never sent its opt-in: the race was not exercised"
    assert apsis_sim.get_profile(CRM, "1") is None, "a person deleted in Efficy was created again by the page"
    assert not store.get(CFG.integration_id, 1).exists_in_apsis
