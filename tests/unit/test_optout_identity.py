"""An opt-out's profile key and e-mail address come from the same APSIS One profile. When the key's Efficy person
has another address, taking that person out of a CRM profile would opt out someone who never asked: the route
keeps the address, and the write-back removes nobody on such contradicting evidence (the opt-out is recorded,
so the APSIS profile is never opted in again over it)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from efficy_sync.optout import WriteBack, accept
from efficy_sync.sync import PersonSyncer

from tests.memory_store import MemoryPersonStateStore
from tests.unit.consent_configs import NEWS
from tests.unit.test_optout_writeback import CFG, FakeApsis, FakeEfficy

TOKEN = "tok"


def routed(body: dict[str, Any]) -> Any:
    sent: list[Any] = []
    headers = {CFG.apsis.optout_token_header: TOKEN, "Content-Type": "application/json"}
    accept(CFG, headers, json.dumps(body).encode(), TOKEN, sent.append, now=lambda: datetime.now(UTC))
    (message,) = sent
    return message


def world() -> tuple[FakeEfficy, MemoryPersonStateStore, WriteBack]:
    store = MemoryPersonStateStore()
    efficy = FakeEfficy(store)
    return (
        efficy,
        store,
        WriteBack(CFG, efficy, store, PersonSyncer(CFG, FakeApsis(), store, email_lookup=lambda a: [])),
    )


def unsubscribe(key: str, email: str) -> dict[str, Any]:
    return {"event": "email.unsubscribe", "profile_key": key, "email": email, "topic_discriminator": NEWS}


def test_a_key_whose_person_has_another_address_opts_nobody_out_in_efficy() -> None:
    efficy, store, writeback = world()
    efficy.add(123, {12}, "jane@example.com")  # who clicked
    efficy.add(124, {12}, "bob@example.com")  # whose key the automation sent
    message = routed(unsubscribe("124", "jane@example.com"))
    assert message.email == "jane@example.com"  # kept beside the key

    writeback.process(message)
    assert efficy.persons[124]["profiles"] == {12} and efficy.persons[123]["profiles"] == {12}
    (record,) = store.get(CFG.integration_id, 124).optouts.values()
    assert record.awaiting_writeback is False  # held for the APSIS profile, never written back


def test_the_same_address_in_another_case_is_written_back_as_before() -> None:
    efficy, store, writeback = world()
    efficy.add(124, {12}, "Jane@Example.com")
    writeback.process(routed(unsubscribe("124", " jane@example.COM")))
    assert efficy.persons[124]["profiles"] == set()
    (record,) = store.get(CFG.integration_id, 124).optouts.values()
    assert record.confirmed


def test_an_internationalised_domain_in_its_ascii_form_is_the_same_address() -> None:
    """The sync sends APSIS jane@xn--mller-kva.de for Efficy's jane@müller.de (values.to_email): the opt-out
    APSIS reports back with that address is the same person's, not an address mismatch."""
    efficy, store, writeback = world()
    efficy.add(126, {12}, "Jane@Müller.de")
    writeback.process(routed(unsubscribe("126", "jane@xn--mller-kva.de")))
    assert efficy.persons[126]["profiles"] == set()
    (record,) = store.get(CFG.integration_id, 126).optouts.values()
    assert record.confirmed


def test_a_person_without_an_address_in_efficy_proves_nothing_and_is_written_back() -> None:
    efficy, _, writeback = world()
    efficy.add(125, {12})
    efficy.persons[125]["EMAIL1"] = ""
    writeback.process(routed(unsubscribe("125", "someone@example.com")))
    assert efficy.persons[125]["profiles"] == set()


def test_a_key_whose_contact_was_merged_away_opts_out_the_contacts_with_the_address() -> None:
    """Person 5 was merged into 7 in Efficy: the opt-out of APSIS profile 5 is the address's, and 7 holds it."""
    efficy, store, writeback = world()
    efficy.add(7, {12}, "jane@example.com")
    result = writeback.process(routed(unsubscribe("5", "jane@example.com")))
    assert result.missing == [5] and efficy.persons[7]["profiles"] == set()
    (record,) = store.get(CFG.integration_id, 7).optouts.values()
    assert record.confirmed


def test_a_key_gone_with_nobody_else_at_the_address_is_acknowledged_as_before() -> None:
    efficy, _, writeback = world()
    efficy.add(8, {12}, "other@example.com")
    result = writeback.process(routed(unsubscribe("5", "jane@example.com")))
    assert result.persons == [5] and result.missing == [5] and efficy.persons[8]["profiles"] == {12}


def test_the_address_check_failing_on_an_efficy_outage_still_records_the_opt_out_first() -> None:
    """The record comes before Efficy is touched: an outage must never leave an opt-out unknown to the sync."""
    import pytest
    from efficy_sync.clients.errors import EfficyUnavailable

    efficy, store, writeback = world()
    efficy.add(124, {12}, "jane@example.com")
    efficy.failures.append(EfficyUnavailable("503"))
    with pytest.raises(EfficyUnavailable):
        writeback.process(routed(unsubscribe("124", "jane@example.com")))
    assert list(store.get(CFG.integration_id, 124).optouts)  # recorded, to be written back on the retry
    writeback.process(routed(unsubscribe("124", "jane@example.com")))
    assert efficy.persons[124]["profiles"] == set()


def test_a_mismatch_found_on_the_retry_after_an_outage_leaves_no_record_awaiting_a_write_back() -> None:
    """The outage made the first attempt record the opt-out awaiting its write-back; the retry then found the
    key's person has another address and wrote nothing back. Left awaiting, only a write-back could confirm
    the record, and none would run: bob stayed opted out for good, even out of the CRM profile and back in."""
    import pytest
    from efficy_sync.clients.errors import EfficyUnavailable
    from efficy_sync.consent import confirm, decide

    efficy, store, writeback = world()
    efficy.add(123, {12}, "jane@example.com")
    efficy.add(124, {12}, "bob@example.com")
    message = routed(unsubscribe("124", "jane@example.com"))
    efficy.failures.append(EfficyUnavailable("503"))
    with pytest.raises(EfficyUnavailable):
        writeback.process(message)
    (first,) = store.get(CFG.integration_id, 124).optouts.values()
    assert first.awaiting_writeback  # recorded before Efficy could be read

    writeback.process(message)  # the retry: a mismatch

    assert efficy.persons[124]["profiles"] == {12}
    (record,) = store.get(CFG.integration_id, 124).optouts.values()
    assert record.awaiting_writeback is False and record.at == first.at
    out = confirm(record, member=False, change_stamp="2099-01-01T00:00:00.000")
    assert out is not None and out.confirmed  # a CRM user taking bob out confirms it ...
    assert decide(True, None, out, "2099-02-01T00:00:00.000").type == "opt-in"  # ... and back in opts him in
