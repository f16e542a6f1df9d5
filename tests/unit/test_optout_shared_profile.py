"""One CRM profile mapped to two subscriptions or channels: taking the person out of it for one opt-out would
withdraw the other consent too (an e-mail unsubscribe turned into an SMS opt-out). The opt-out is recorded (the
sync keeps it in APSIS One) and not written back."""

from __future__ import annotations

from efficy_sync.optout import WriteBack
from efficy_sync.sync import PersonSyncer

from tests.memory_store import MemoryPersonStateStore
from tests.unit.consent_configs import EVENTS, NEWS, SMS, consent_config
from tests.unit.test_optout_writeback import FakeApsis, FakeEfficy, message

SHARED = consent_config(profiles={(NEWS, "email"): 12, (SMS, "sms"): 12, (EVENTS, "email"): 14})


def test_an_email_unsubscribe_leaves_the_sms_consent_of_a_profile_mapped_on_both_channels() -> None:
    store = MemoryPersonStateStore()
    efficy, apsis = FakeEfficy(store), FakeApsis()
    efficy.add(7, {12, 14})
    efficy.persons[7]["MOBILE"] = "+32470123456"
    syncer = PersonSyncer(SHARED, apsis, store, email_lookup=lambda address: [])
    syncer.sync(7, efficy.get_persons([7])[7], store.get("acme", 7))
    apsis.calls.clear()

    result = WriteBack(SHARED, efficy, store, syncer).process(message(7, None, slots=[(NEWS, "email")]))

    assert efficy.persons[7]["profiles"] == {12, 14}  # not taken out of the profile that also backs SMS
    assert ("consent", ("7", SMS, "opt-out")) not in apsis.calls
    assert result.skipped_slots == [f"{NEWS}|email"] and not result.slots
    assert f"{NEWS}|email" in store.get("acme", 7).optouts  # recorded: no sync opts the person back in


def test_a_profile_behind_one_subscription_only_is_written_back() -> None:
    store = MemoryPersonStateStore()
    efficy = FakeEfficy(store)
    efficy.add(7, {12, 14})
    WriteBack(SHARED, efficy, store).process(message(7, None, slots=[(EVENTS, "email")]))
    assert efficy.persons[7]["profiles"] == {12}
