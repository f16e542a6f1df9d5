"""An SMS STOP on a CRM profile that also backs e-mail is recorded, not written back (shared profile). README:
it holds "until a CRM user takes them out of the mapped CRM Profile and back in". With Efficy's D_CHANGE in the
server's naive local time west of UTC (here UTC-4), the CRM user's removal half an hour after the STOP was
stamped "earlier" than the APSIS time, so it never confirmed the record, and the explicit re-add half an hour
later was overruled for good. A read we asked for after the record was stored now confirms it too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from efficy_sync.consent import ANSWERED_AT, ASKED_AT
from efficy_sync.optout import OptOutMessage, SlotRef, WriteBack
from efficy_sync.sync import PersonSyncer

from tests.memory_store import MemoryPersonStateStore
from tests.unit.consent_configs import EVENTS, NEWS, SMS, consent_config
from tests.unit.test_optout_writeback import FakeApsis, FakeEfficy

SHARED = consent_config(profiles={(NEWS, "email"): 12, (SMS, "sms"): 12, (EVENTS, "email"): 14})
SMS_SLOT = f"{SMS}|sms"
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def snapshot(profiles: list[int], moment: datetime, efficy_offset: timedelta) -> dict[str, Any]:
    """Efficy's record as our client returns it: D_CHANGE in the server's naive local time, read times ours (UTC)."""
    return {
        "K_CONTACT": 7,
        "EMAIL1": "p7@example.com",
        "MOBILE": "+32470123456",
        "profiles": profiles,
        "D_CHANGE": iso(moment + efficy_offset),
        ASKED_AT: f"{iso(moment)}.000000",
        ANSWERED_AT: f"{iso(moment)}.200000",
    }


@pytest.mark.parametrize("efficy_offset", [timedelta(0), timedelta(hours=-4)], ids=["efficy-utc", "efficy-utc-4"])
def test_crm_out_and_back_in_after_a_shared_profile_sms_stop_opts_in_again(efficy_offset: timedelta) -> None:
    store = MemoryPersonStateStore()
    apsis = FakeApsis()
    efficy = FakeEfficy(store)
    efficy.add(7, {12, 14})
    syncer = PersonSyncer(SHARED, apsis, store, email_lookup=lambda address: [])
    t_sync, t_stop, t_out, t_in = (NOW - timedelta(minutes=m) for m in (180, 120, 90, 60))
    syncer.sync(7, snapshot([12, 14], t_sync, efficy_offset), None)  # opted in on both channels
    # the person texts STOP; the profile also backs e-mail, so the opt-out is recorded, not written back
    stop = OptOutMessage(
        integration_id="acme",
        event="sms.unsubscribe",
        profile_key=7,
        slots=[SlotRef(topic=SMS, channel="sms")],
        occurred_at=iso(t_stop) + ".000Z",
    )
    WriteBack(SHARED, efficy, store, syncer, clock=lambda: iso(t_stop) + "Z").process(stop)
    assert SMS_SLOT in store.get("acme", 7).optouts
    # half an hour later a CRM user takes the person out of profile 12, and half an hour after that back in:
    # the explicit CRM re-opt-in README names ("out of the mapped CRM Profile and back in")
    syncer.sync(7, snapshot([14], t_out, efficy_offset), store.get("acme", 7))
    apsis.calls.clear()
    syncer.sync(7, snapshot([12, 14], t_in, efficy_offset), store.get("acme", 7))

    sent = [detail for kind, detail in apsis.calls if kind == "consent"]
    assert ("7", SMS, "opt-in") in sent, (sent, store.get("acme", 7).optouts)
