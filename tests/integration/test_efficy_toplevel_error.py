"""Efficy's JSON-RPC may answer a business error as a top-level object `{"#error": {errorcode, errorstring}}`
instead of an array element (contracts/efficy.md section 8). `EfficyClient._rpc` raised such an error at once,
before per-context handling, so the write-back's removal answered "relation missing" (the wanted state) or
"not found" (the person gone) in that shape failed, was dead-lettered and left the opt-out awaiting write-back."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from efficy_sync.clients.errors import EfficyBusinessError
from efficy_sync.optout import OptOutMessage, SlotRef, WriteBack
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_optout_matching import AT, CFG, efficy  # noqa: F401  (efficy is the fixture)
from tests.memory_store import MemoryPersonStateStore
from tests.unit.consent_configs import NEWS


def answer_once(sim: EfficySimulator, body: Any) -> None:
    spec = {
        "path_regex": "^/crm/json",
        "status": 200,
        "count": 1,
        "body": json.dumps(body),
        "content_type": "application/json",
    }
    assert requests.post(f"{sim.url}/_sim/faults", json=spec, timeout=5).status_code == 200


def test_a_removal_answered_relation_missing_at_top_level_is_written_back(sim, efficy) -> None:
    # the person already left CRM profile 12 (a CRM user, or an earlier attempt whose answer was lost)
    sim.upsert_persons(
        [{"K_CONTACT": 7, "NAME": "N", "EMAIL1": "p7@example.com", "OPENED": "1", "ROBINSON": "0", "profiles": []}]
    )
    answer_once(sim, {"#error": {"errorcode": "RELATION_NOT_FOUND", "errorstring": "contact is not in CRM profile 12"}})
    store = MemoryPersonStateStore()
    msg = OptOutMessage(
        integration_id="acme",
        event="email.unsubscribe",
        profile_key=7,
        slots=[SlotRef(topic=NEWS, channel="email")],
        occurred_at=AT,
    )

    result = WriteBack(CFG, efficy, store).process(msg)  # raises EfficyBusinessError today

    assert 7 in result.confirmed_stamps
    assert store.get("acme", 7).optouts[f"{NEWS}|email"].confirmed


def test_a_person_gone_answered_at_top_level_ends_the_opt_out(sim, efficy) -> None:
    # contact 8 does not exist in Efficy: both the removal and the confirming read answer the not-found code
    gone = {"#error": {"errorcode": "RECORD_NOT_FOUND", "errorstring": "Cont record 8 does not exist"}}
    answer_once(sim, gone)
    answer_once(sim, gone)
    store = MemoryPersonStateStore()
    msg = OptOutMessage(
        integration_id="acme",
        event="email.unsubscribe",
        profile_key=8,
        slots=[SlotRef(topic=NEWS, channel="email")],
        occurred_at=AT,
    )

    result = WriteBack(CFG, efficy, store).process(msg)

    assert result.missing == [8]


# ---- the other methods that read per-context codes ------------------------------------------------------------
def test_a_one_person_read_answered_not_found_at_top_level_reports_them_gone(sim, efficy) -> None:
    # the read `explain`, the write-back and the worker's one-by-one retry make; the records export confirms
    answer_once(sim, {"#error": {"errorcode": "RECORD_NOT_FOUND", "errorstring": "Cont record 9 does not exist"}})
    assert efficy.get_persons([9]) == {}


def test_a_top_level_error_of_a_batch_names_no_person_and_fails_the_read(sim, efficy) -> None:
    sim.upsert_persons([{"K_CONTACT": k, "NAME": "N", "OPENED": "1", "profiles": []} for k in (1, 2)])
    answer_once(sim, {"#error": {"errorcode": "RECORD_NOT_FOUND", "errorstring": "Cont record 2 does not exist"}})
    with pytest.raises(EfficyBusinessError) as caught:  # neither person is reported gone on its word
        efficy.get_persons([1, 2])
    assert caught.value.code == "RECORD_NOT_FOUND"
    assert set(efficy.get_persons([1, 2])) == {1, 2}


def test_a_removal_answered_another_code_at_top_level_still_fails(sim, efficy) -> None:
    answer_once(sim, {"#error": {"errorcode": "DBAC-1", "errorstring": "record locked"}})
    with pytest.raises(EfficyBusinessError) as caught:
        efficy.remove_from_profile(7, 12)
    assert caught.value.code == "DBAC-1"


def test_a_look_up_answered_at_top_level_still_fails(sim, efficy) -> None:
    # api calls read no per-context code: any error fails them, whatever its shape
    answer_once(sim, {"#error": {"errorcode": "RECORD_NOT_FOUND", "errorstring": "no such query"}})
    with pytest.raises(EfficyBusinessError):
        efficy.run_query(3618)
