"""A new person whose first create (create + attributes, one call) met an APSIS 5xx was retried with its e-mail
hash marked unsure (UNSURE_HASH): the retry read the address as "changed" and, when another synced person
shared it (a couple, info@company), held it back as an e-mail conflict, sending the profile without its address,
while the same person whose create succeeded first time kept it. An unsure hash is no earlier address."""

from __future__ import annotations

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.config import EMAIL_ATTRIBUTE

from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_optout_sync import FakeApsis, person, syncer


def test_a_create_retried_after_a_5xx_keeps_a_shared_address() -> None:
    store = MemoryPersonStateStore()
    lookup = lambda address: [7, 8]  # noqa: E731  (two CRM contacts share the address)
    syncer(store, FakeApsis(), lookup).sync(8, person(8, EMAIL1="shared@example.com"), None)  # created fine

    down = FakeApsis(fail_on={"attributes": ApsisUnavailable("APSIS 503")})  # the create+attributes call
    with pytest.raises(ApsisUnavailable):
        syncer(store, down, lookup).sync(7, person(7, EMAIL1="shared@example.com"), None)

    retry = FakeApsis()
    outcome = syncer(store, retry, lookup).sync(7, person(7, EMAIL1="shared@example.com"), store.get("acme", 7))
    state = store.get("acme", 7)
    sent = [detail for kind, detail in retry.calls if kind == "attributes"]
    assert state.email_conflict is None and "email_conflict" not in outcome.notices, (
        f"a first address, retried after a 503, was held back as an e-mail conflict: sent {sent}, "
        f"error_category={state.error_category}"
    )
    assert any(attrs.get(EMAIL_ATTRIBUTE) == "shared@example.com" for attrs in sent), sent
