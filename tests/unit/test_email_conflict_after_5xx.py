"""An e-mail change to an address another synced person's profile holds was held back (email_conflict, the old
address cleared). When that held-back call (the clear of the old address) met an APSIS 5xx, the e-mail hash was
marked unsure like a first address's, so the retry made no check at all and sent the other person's address to
this profile: merged silently, which sync.py's docstring says never happens. An unsure hash after an address we
knew (UNSURE_CHANGE and its hash) keeps the check; an unsure first address still costs none, and neither does
the address we knew given again."""

from __future__ import annotations

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.config import EMAIL_ATTRIBUTE
from efficy_sync.state import UNSURE_HASH

from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_optout_sync import FakeApsis, person, syncer


def test_a_conflicting_address_is_still_held_back_when_the_retry_follows_a_5xx() -> None:
    store = MemoryPersonStateStore()
    lookup = lambda address: [7, 8] if address == "p8@example.com" else []  # noqa: E731
    syncer(store, FakeApsis(), lookup).sync(8, person(8, EMAIL1="p8@example.com"), None)
    syncer(store, FakeApsis(), lookup).sync(7, person(7, EMAIL1="p7@example.com"), None)

    # person 7's address changes in the CRM to person 8's: held back (the old address cleared) ...
    changed = person(7, stamp="2024-05-02T10:00:00", EMAIL1="p8@example.com")
    down = FakeApsis(fail_on={"attributes": ApsisUnavailable("APSIS 503")})  # ... and that call meets a 503
    with pytest.raises(ApsisUnavailable):
        syncer(store, down, lookup).sync(7, changed, store.get("acme", 7))

    retry = FakeApsis()  # the queue's retry of the same change
    syncer(store, retry, lookup).sync(7, changed, store.get("acme", 7))
    sent = [detail for kind, detail in retry.calls if kind == "attributes"]
    assert not any(attrs.get(EMAIL_ATTRIBUTE) == "p8@example.com" for attrs in sent), (
        f"person 8's address was sent to person 7's profile without the conflict check: {sent}"
    )
    assert store.get("acme", 7).email_conflict is not None


def test_a_first_address_whose_create_met_a_5xx_costs_no_check_on_the_retry() -> None:
    store = MemoryPersonStateStore()
    looked: list[str] = []
    lookup = lambda address: looked.append(address) or [7, 8]  # noqa: E731  (a shared address: two contacts)
    syncer(store, FakeApsis(), lookup).sync(8, person(8, EMAIL1="home@example.com"), None)
    down = FakeApsis(fail_on={"attributes": ApsisUnavailable("APSIS 503")})
    with pytest.raises(ApsisUnavailable):
        syncer(store, down, lookup).sync(7, person(7, EMAIL1="home@example.com"), None)
    assert store.get("acme", 7).attribute_hashes[EMAIL_ATTRIBUTE] == UNSURE_HASH

    retry = FakeApsis()
    syncer(store, retry, lookup).sync(7, person(7, EMAIL1="home@example.com"), store.get("acme", 7))
    assert looked == [] and store.get("acme", 7).email_conflict is None
    assert any(attrs.get(EMAIL_ATTRIBUTE) == "home@example.com" for kind, attrs in retry.calls if kind == "attributes")


def test_an_address_changed_back_to_the_one_we_knew_costs_no_check() -> None:
    """A -> B met a 5xx, then the CRM set A again (an address another contact shares): A is what APSIS held."""
    store = MemoryPersonStateStore()
    looked: list[str] = []
    lookup = lambda address: looked.append(address) or [7, 8]  # noqa: E731
    syncer(store, FakeApsis(), lookup).sync(8, person(8, EMAIL1="home@example.com"), None)
    syncer(store, FakeApsis(), lookup).sync(7, person(7, EMAIL1="home@example.com"), None)
    down = FakeApsis(fail_on={"attributes": ApsisUnavailable("APSIS 503")})
    with pytest.raises(ApsisUnavailable):
        syncer(store, down, lambda address: []).sync(
            7, person(7, stamp="2024-05-02T10:00:00", EMAIL1="work@example.com"), store.get("acme", 7)
        )
    retry = FakeApsis()
    back = person(7, stamp="2024-05-03T10:00:00", EMAIL1="home@example.com")
    syncer(store, retry, lookup).sync(7, back, store.get("acme", 7))
    assert looked == [] and store.get("acme", 7).email_conflict is None
    assert any(attrs.get(EMAIL_ATTRIBUTE) == "home@example.com" for kind, attrs in retry.calls if kind == "attributes")
