"""An SMS STOP identified only by an e-mail address two contacts share says nothing about whose phone sent it
(docs/apsis-optout-automation.md: "takes nobody out ... ends in the DLQ for a person to look at",
OptOutAmbiguous). When the SMS subscription is not written back (its CRM profile also backs an e-mail
subscription, or no mapping names it), the ambiguity check looked only at the slots written back (none), so the
opt-out was recorded on BOTH contacts and acknowledged: the contact who never sent STOP had a live SMS opt-out
record, and every sync opted them out of the SMS subscription in APSIS One. It is judged on the message's
channels now."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.consent import decide
from efficy_sync.optout import OptOutAmbiguous, OptOutMessage, SlotRef, WriteBack
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore
from tests.unit.consent_configs import NEWS, SMS, consent_config

FAST = RetryPolicy(total=1, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
AT = "2024-05-01T10:00:00.000Z"
SHARED = consent_config(profiles={(NEWS, "email"): 12, (SMS, "sms"): 12})  # one CRM profile backs both
UNMAPPED = consent_config(profiles={(NEWS, "email"): 12})  # the SMS subscription is not mapped (yet)


@pytest.fixture
def efficy(sim: EfficySimulator) -> Iterator[EfficyClient]:
    with EfficyClient(sim.url, "efficy-test-key", policy=FAST) as client:
        yield client


def person(key: int, **extra: Any) -> dict[str, Any]:
    base = {"K_CONTACT": key, "NAME": f"N{key}", "FIRSTNAME": "Jo", "EMAIL1": f"p{key}@example.com"}
    return {**base, "OPENED": "1", "ROBINSON": "0", "profiles": [], **extra}


def sms_stop_by_address(address: str) -> OptOutMessage:
    return OptOutMessage(
        integration_id="acme",
        event="sms.unsubscribe",
        profile_key=None,
        email=address,
        slots=[SlotRef(topic=SMS, channel="sms")],
        occurred_at=AT,
    )


@pytest.mark.parametrize("cfg", [SHARED, UNMAPPED], ids=["shared-profile", "unmapped"])
def test_an_sms_stop_by_a_shared_address_opts_nobody_out(sim, efficy, cfg) -> None:
    sim.upsert_persons(
        [
            person(1, EMAIL1="info@acme.example", MOBILE="+32470000001", profiles=[12]),
            person(2, EMAIL1="info@acme.example", MOBILE="+32470000002", profiles=[12]),
        ]
    )
    states = MemoryPersonStateStore()
    try:
        WriteBack(cfg, efficy, states).process(sms_stop_by_address("info@acme.example"))
        acknowledged = True
    except OptOutAmbiguous:
        acknowledged = False
    slot = f"{SMS}|sms"
    opted_out = [k for k in (1, 2) if (s := states.get("acme", k)) is not None and slot in s.optouts]
    # what a sync decides for contact 2, a member of the CRM profile who never sent STOP
    state2 = states.get("acme", 2)
    record2 = state2.optouts.get(slot) if state2 is not None else None
    decision = decide(True, None, record2, "2024-05-02T10:00:00.000Z").type
    assert (acknowledged, opted_out, decision) == (False, [], "opt-in")
