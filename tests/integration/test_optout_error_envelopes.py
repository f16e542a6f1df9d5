"""The write-back against an Efficy that answers 200 with `"success": false` (contract §8: JSON-RPC reports its
business errors inside a 200, in several shapes). The removal and the read-back each reported a failure that
way, beside an empty profile dataset: the removal read as done and the read-back as "in no CRM profile", so the
opt-out was confirmed as written while Efficy still held the person in the profile, and the next sync, seeing
them a member after that confirmation, opted them in again in APSIS One. The real WriteBack and EfficyClient
against the Efficy simulator over HTTP, the simulator answering the envelope through its fault injection."""

from __future__ import annotations

import json

import pytest
from efficy_sync.clients.errors import EfficyBusinessError
from efficy_sync.optout import WriteBack

from tests.integration.test_optout_matching import CFG, efficy, message, person, profiles  # noqa: F401
from tests.memory_store import MemoryPersonStateStore

MASTER = {"@name": "master", "#result": {"#class": "dataset", "#data": [{"K_CONTACT": 1, "D_CHANGE": "2024-05-01"}]}}
NO_PROFILES = {"@name": "detail", "detail": "Prof", "#result": {"#class": "dataset", "#data": []}}


@pytest.mark.parametrize("flag", [{"success": False}, {"ok": False}, {"success": False, "message": "locked"}])
def test_a_removal_and_a_read_reporting_failure_are_never_confirmed(sim, efficy, flag) -> None:
    sim.upsert_persons([person(1, profiles=[12])])
    failing = [
        {"#id": "edit-1", "@name": "edit", "key": 1, **flag},
        {"#id": "consult-1", "@name": "consult", "key": 1, **flag, "@func": [MASTER, NO_PROFILES]},
    ]
    sim.add_fault(path_regex="/crm/json", status=200, body=json.dumps(failing), content_type="application/json")
    store = MemoryPersonStateStore()
    with pytest.raises(EfficyBusinessError):  # the message fails: SQS delivers it again
        WriteBack(CFG, efficy, store).process(message(1, None))
    assert profiles(sim, 1) == {12}
    [record] = store.get("acme", 1).optouts.values()
    assert record.awaiting_writeback and not record.confirmed  # recorded, never taken for written back
    sim.clear_faults()
    WriteBack(CFG, efficy, store).process(message(1, None))  # Efficy answers again: written back
    assert profiles(sim, 1) == set()
    [record] = store.get("acme", 1).optouts.values()
    assert record.confirmed and not record.awaiting_writeback
