"""reconcile --fix of a "missing" profile marked every known attribute hash as a change we were unsure of, so the
repair sync ran the e-mail conflict check on an address that did not change. Two contacts sharing an address
(a supported state: a first address is never checked) then read as a conflict: the repair cleared the person's
own, unchanged address from APSIS One and recorded a false email_conflict; where the profile really was gone,
it was created again without its address (the re-plan took the held-back address). An unsure hash now keeps the
hash we knew (state.UNSURE_CHANGE), and a profile found gone is planned again from the CRM's own record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from efficy_sync.clients.errors import NotFound
from efficy_sync.config import EMAIL_ATTRIBUTE
from efficy_sync.reconcile import Drift, PersonCheck, invalidate

from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_optout_sync import FakeApsis, person, syncer

SHARED = "home@example.com"


def lookup(address: str) -> list[int]:
    return [7, 8] if address == SHARED else []  # two Efficy contacts, one address


def world() -> MemoryPersonStateStore:
    store = MemoryPersonStateStore()
    syncer(store, FakeApsis(), lookup).sync(8, person(8, EMAIL1=SHARED), None)
    syncer(store, FakeApsis(), lookup).sync(7, person(7, EMAIL1=SHARED), None)
    # reconcile: the export did not show profile 7 ("missing"); --fix stores the invalidated state
    store.put(invalidate("acme", PersonCheck("7", drifts=[Drift("missing", "7", {})]), store.get("acme", 7)))
    return store


def test_repairing_a_missing_profile_keeps_its_unchanged_shared_address() -> None:
    store = world()
    apsis = FakeApsis()  # the repair sync, from the same (unchanged) Efficy record
    syncer(store, apsis, lookup).sync(7, person(7, EMAIL1=SHARED), store.get("acme", 7))
    sent = [attrs for kind, attrs in apsis.calls if kind == "attributes"]
    assert any(attrs.get(EMAIL_ATTRIBUTE) == SHARED for attrs in sent), (
        f"the person's own unchanged address was not sent again: {sent}"
    )
    assert store.get("acme", 7).email_conflict is None


@dataclass
class Gone(FakeApsis):
    """Profile 7 was deleted in APSIS One behind our back: a call on it answers 404 until it is created again."""

    exists: bool = False

    def create_profile(self, key: str) -> bool:
        self.exists = True
        return super().create_profile(key)

    def patch_attributes(self, key: str, attributes: dict[str, Any]) -> None:
        if not self.exists:
            raise NotFound("profile not found", status=404)
        super().patch_attributes(key, attributes)

    def consents_if_profile(self, key: str, consent_types: list[str] | None = None) -> list[dict[str, Any]] | None:
        return [] if self.exists else None


def test_a_missing_profile_is_created_again_with_its_address() -> None:
    store = world()
    apsis = Gone()
    syncer(store, apsis, lookup).sync(7, person(7, EMAIL1=SHARED), store.get("acme", 7))
    assert ("create", "7") in apsis.calls
    sent = [attrs for kind, attrs in apsis.calls if kind == "attributes"]
    assert any(attrs.get(EMAIL_ATTRIBUTE) == SHARED for attrs in sent), (
        f"profile 7 was created again without its e-mail address: {sent}"
    )
