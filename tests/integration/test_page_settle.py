"""A full-sync page whose batched state write is refused: a newer sync stored the person while the page's calls
were on their way (the opt-out write-back, which is not parked; real time after a cancel). APSIS may then hold
the page's older opt-in while the stored state says opt-out. The page used to sync the person again from its
own older snapshot, which plans nothing, and APSIS kept the opt-in for good. Now what the page sent is marked
unknown in the newer state and the person is synced again from a fresh Efficy read. Real page worker,
PersonSyncer, WriteBack and clients against the simulators over HTTP; the state store in DynamoDB (moto) and
in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.fullsync.page import sync_page
from efficy_sync.mapping import needed_fields
from efficy_sync.optout import WriteBack
from efficy_sync.optout_intake import OptOutMessage, SlotRef
from efficy_sync.state import utc_now
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS, SLOT, person
from tests.memory_store import MemoryPersonStateStore
from tests.support import create_pk_sk_table

DESCRIPTOR = {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": False}


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryPersonStateStore()
    request.getfixturevalue("in_process_aws")
    from efficy_sync.store.persons import PersonStateStore

    create_pk_sk_table("settle-state", "eu-west-1")
    return PersonStateStore("settle-state")


@pytest.fixture
def sims() -> Iterator[tuple[EfficySimulator, ApsisSimulator]]:
    efficy = EfficySimulator().start()
    apsis = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield efficy, apsis
    efficy.stop()
    apsis.stop()


def news_consent(sim: ApsisSimulator, key: int) -> str | None:
    profile = sim.get_profile(CRM, str(key)) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


class HeldApsis(ApsisClient):
    """The page's client: its first opt-in is held (a 429 burst would) while `meanwhile` runs."""

    meanwhile: Callable[[], None] | None = None

    def set_consent(self, key: str, topic: str, channel: str, consent_type: str, **kw: Any) -> str:
        if consent_type == "opt-in" and self.meanwhile is not None:
            hook, self.meanwhile = self.meanwhile, None
            hook()
        return super().set_consent(key, topic, channel, consent_type, **kw)


def opted_out_by_the_crm(efficy_sim: EfficySimulator, efficy: EfficyClient, worker: PersonSyncer, store: Any) -> Any:
    """Person 1 synced by real time as a member, then taken out of the CRM profile (APSIS holds the opt-out);
    returns the real-time sync of person 1, for the test to call again."""

    def realtime() -> None:
        worker.sync(1, efficy.get_persons([1], needed_fields(CFG)).get(1), store.get(CFG.integration_id, 1))

    efficy_sim.upsert_persons([person(1)])
    realtime()
    efficy_sim.patch_person(1, {}, profiles=[])
    realtime()
    return realtime


@pytest.mark.parametrize("newer", ["crm-removal", "apsis-unsubscribe"])
def test_a_page_opt_in_overtaken_by_a_newer_sync_is_withdrawn_at_once(
    sims: tuple[EfficySimulator, ApsisSimulator], monkeypatch: pytest.MonkeyPatch, store: Any, newer: str
) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    efficy_sim, apsis_sim = sims
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        worker = PersonSyncer(CFG, apsis, store, email_lookup=efficy.find_contacts_by_email)
        realtime = opted_out_by_the_crm(efficy_sim, efficy, worker, store)
        assert news_consent(apsis_sim, 1) == "opt-out"
        efficy_sim.patch_person(1, {}, profiles=[12])  # back in the profile during the full sync (parked)

        def meanwhile() -> None:  # while the page's opt-in is held, a newer sync stores the person
            if newer == "crm-removal":
                efficy_sim.patch_person(1, {}, profiles=[])
                realtime()
            else:
                message = OptOutMessage(
                    integration_id=CFG.integration_id, event="email.unsubscribe", profile_key=1,
                    slots=[SlotRef(topic=NEWS, channel="email")], occurred_at=utc_now(),
                )  # fmt: skip
                WriteBack(CFG, efficy, store, worker).process(message)

        page_apsis = HeldApsis(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
        page_apsis.meanwhile = meanwhile
        result = sync_page(CFG, DESCRIPTOR, efficy=efficy, apsis=page_apsis, states=store, dry_run=False)

    assert page_apsis.meanwhile is None, "the page never sent its opt-in: the race was not exercised"
    assert efficy_sim.get_person(1).get("profiles") == []
    assert news_consent(apsis_sim, 1) == "opt-out", "the page's older opt-in stayed in APSIS"
    assert store.get(CFG.integration_id, 1).consents[SLOT] == "opt-out"
    assert result.counters.get("failed", 0) == 0


class FailingApsis(HeldApsis):
    """HeldApsis, and person `fail_key`'s consent call fails for good (an APSIS 503 after its retries)."""

    fail_key: str | None = None

    def set_consent(self, key: str, topic: str, channel: str, consent_type: str, **kw: Any) -> str:
        if key == self.fail_key:
            from efficy_sync.clients.errors import ApsisUnavailable

            raise ApsisUnavailable("APSIS 503 after retries")
        return super().set_consent(key, topic, channel, consent_type, **kw)


def test_a_refused_state_is_marked_even_when_another_person_of_the_page_fails(
    sims: tuple[EfficySimulator, ApsisSimulator], monkeypatch: pytest.MonkeyPatch, store: Any
) -> None:
    """The page fails (person 2 raises) after its chunk's write was refused for person 1: the marking was
    skipped, and the retried page planned nothing against the newer state, so its older opt-in stayed."""
    from efficy_sync.clients.errors import ApsisUnavailable

    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    efficy_sim, apsis_sim = sims
    apsis = ApsisClient(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
        worker = PersonSyncer(CFG, apsis, store, email_lookup=efficy.find_contacts_by_email)
        realtime = opted_out_by_the_crm(efficy_sim, efficy, worker, store)
        efficy_sim.patch_person(1, {}, profiles=[12])
        efficy_sim.upsert_persons([person(2)])

        def meanwhile() -> None:  # the CRM removal, synced by real time while the page's opt-in is on its way
            efficy_sim.patch_person(1, {}, profiles=[])
            realtime()

        page_apsis = FailingApsis(apsis_sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
        page_apsis.meanwhile, page_apsis.fail_key = meanwhile, "2"
        with pytest.raises(ApsisUnavailable):
            sync_page(CFG, DESCRIPTOR, efficy=efficy, apsis=page_apsis, states=store, dry_run=False)
        assert page_apsis.meanwhile is None, "the page never sent its opt-in: the race was not exercised"
        page_apsis.fail_key = None  # the state machine retries the page
        sync_page(CFG, DESCRIPTOR, efficy=efficy, apsis=page_apsis, states=store, dry_run=False)

    assert efficy_sim.get_person(1).get("profiles") == []
    assert news_consent(apsis_sim, 1) == "opt-out", "the page's older opt-in stayed in APSIS"
