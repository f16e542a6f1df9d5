"""Who an opt-out takes out of a CRM profile when it is matched by e-mail address: the real WriteBack and
EfficyClient against the Efficy simulator over HTTP. Efficy's address look-up also finds an address held in
another e-mail field, and several contacts may share one mailbox: only holders of the synced address (EMAIL1,
the one APSIS One has) are who opted out, and a shared address says nothing about whose phone sent STOP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.optout import OptOutAmbiguous, OptOutMessage, OptOutUnmatched, SlotRef, WriteBack
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.memory_store import MemoryPersonStateStore
from tests.unit.consent_configs import NEWS, SMS, consent_config

FAST = RetryPolicy(total=1, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
CFG = consent_config()
AT = "2024-05-01T10:00:00.000Z"


@pytest.fixture
def efficy(sim: EfficySimulator) -> Iterator[EfficyClient]:
    with EfficyClient(sim.url, "efficy-test-key", policy=FAST) as client:
        yield client


def person(key: int, **extra: Any) -> dict[str, Any]:
    base = {"K_CONTACT": key, "NAME": f"N{key}", "FIRSTNAME": "Jo", "EMAIL1": f"p{key}@example.com"}
    return {**base, "OPENED": "1", "ROBINSON": "0", "profiles": [], **extra}


def message(key: int | None, email: str | None, topic: str = NEWS, channel: str = "email") -> OptOutMessage:
    event = "sms.unsubscribe" if channel == "sms" else "email.unsubscribe"
    slots = [SlotRef(topic=topic, channel=channel)]
    return OptOutMessage(integration_id="acme", event=event, profile_key=key, email=email, slots=slots, occurred_at=AT)


def profiles(sim: EfficySimulator, key: int) -> set[int]:
    return set(sim.get_person(key)["profiles"])


def test_a_contact_holding_the_address_in_another_field_is_not_opted_out(sim, efficy) -> None:
    sim.upsert_persons(
        [
            person(1, EMAIL1="a@acme.example", profiles=[12]),
            person(2, EMAIL1="b@acme.example", EMAIL2="a@acme.example", profiles=[12]),
        ]
    )
    result = WriteBack(CFG, efficy, MemoryPersonStateStore()).process(message(None, "a@acme.example"))
    assert result.persons == [1]
    assert profiles(sim, 1) == set() and profiles(sim, 2) == {12}


def test_only_another_field_holds_the_address_nobody_is_opted_out(sim, efficy) -> None:
    sim.upsert_persons([person(2, EMAIL1="b@acme.example", EMAIL2="a@acme.example", profiles=[12])])
    with pytest.raises(OptOutUnmatched):  # retried, then dead-lettered for a person to look at
        WriteBack(CFG, efficy, MemoryPersonStateStore()).process(message(None, "a@acme.example"))
    assert profiles(sim, 2) == {12}


def test_an_sms_stop_by_a_shared_address_takes_nobody_out(sim, efficy) -> None:
    sim.upsert_persons(
        [
            person(1, EMAIL1="info@acme.example", MOBILE="+32470000001", profiles=[13]),
            person(2, EMAIL1="info@acme.example", MOBILE="+32470000002", profiles=[13]),
        ]
    )
    with pytest.raises(OptOutAmbiguous):
        WriteBack(CFG, efficy, MemoryPersonStateStore()).process(message(None, "info@acme.example", SMS, "sms"))
    assert profiles(sim, 1) == profiles(sim, 2) == {13}


def test_an_sms_stop_by_an_address_one_contact_holds_is_written_back(sim, efficy) -> None:
    sim.upsert_persons(
        [
            person(1, EMAIL1="jo@acme.example", MOBILE="+32470000001", profiles=[13]),
            person(2, EMAIL1="other@acme.example", EMAIL2="jo@acme.example", profiles=[13]),
        ]
    )
    result = WriteBack(CFG, efficy, MemoryPersonStateStore()).process(message(None, "jo@acme.example", SMS, "sms"))
    assert result.persons == [1] and profiles(sim, 1) == set() and profiles(sim, 2) == {13}


def test_when_the_key_is_gone_only_holders_of_the_synced_address_are_opted_out(sim, efficy) -> None:
    sim.upsert_persons(
        [
            person(2, EMAIL1="b@acme.example", EMAIL2="a@acme.example", profiles=[12]),
            person(3, EMAIL1="a@acme.example", profiles=[12]),
        ]
    )
    result = WriteBack(CFG, efficy, MemoryPersonStateStore()).process(message(1, "a@acme.example"))
    assert result.missing == [1] and result.persons == [1, 3]
    assert profiles(sim, 2) == {12} and profiles(sim, 3) == set()
    assert not result.several_contacts


def test_when_the_key_is_gone_a_shared_mailbox_is_reported_as_several_contacts(sim, efficy) -> None:
    sim.upsert_persons(
        [person(2, EMAIL1="info@acme.example", profiles=[12]), person(3, EMAIL1="info@acme.example", profiles=[12])]
    )
    result = WriteBack(CFG, efficy, MemoryPersonStateStore()).process(message(1, "info@acme.example"))
    assert result.persons == [1, 2, 3] and profiles(sim, 2) == profiles(sim, 3) == set()
    assert result.several_contacts  # the OptOutSeveralContacts warning and metric
