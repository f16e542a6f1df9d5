"""A profile deleted in APSIS One (by hand, an erasure) between two syncs: APSIS answers its own 404 problem+json to
the consent POST / tag PATCH. A change that touched only consents or tags raised NotFound on every try (DLQ, and
a full-sync page failed on every run), and the attribute path re-created the profile without the consents the
state said were there. Now, on APSIS's 404 confirmed by its consents read, the person is planned again as new:
created with every attribute, consent and tag the CRM gives, opt-out records kept."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import ApiError
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, person
from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
NEWS = "usercreated.topics.newsletter-ab12"


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def test_a_consent_change_for_a_profile_deleted_in_apsis_is_not_retried_for_ever(sim: ApsisSimulator) -> None:
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    outside = {**person(7), "profiles": []}
    assert syncer.sync(7, outside, None).result == "synced"  # profile created, no consent yet
    assert apsis.delete_profile("7")  # a marketer deletes the profile in APSIS One

    joined = person(7, stamp="2024-05-02T10:00:00")  # joins the newsletter CRM profile: consent + tag only
    errors = []
    for _ in range(6):  # the queue's 5 tries, then a redrive after the DLQ alarm
        try:
            syncer.sync(7, joined, store.get(CFG.integration_id, 7))
            break
        except ApiError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    assert not errors, errors
    held = sim.get_profile(CRM, "7")
    if held is not None:  # re-created, as the attribute path does: with the CRM's consent
        assert (NEWS, "opt-in") in {(c["topic"], c["type"]) for c in held["consents"]}


def test_one_profile_deleted_in_apsis_does_not_fail_a_full_sync_page(
    sim: ApsisSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full sync after the persons joined the newsletter CRM profile (consent + tag only for each): one profile
    a marketer deleted in APSIS One fails the whole page, and the page's other persons are not synced."""
    from efficy_sync.clients.efficy import EfficyClient
    from efficy_sync.fullsync.page import sync_page
    from efficy_sync_tools.sims.efficy import EfficySimulator

    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    keys = range(1, 41)
    for k in keys:
        assert syncer.sync(k, {**person(k), "profiles": []}, None).result == "synced"
    assert apsis.delete_profile("3")  # deleted by hand in APSIS One

    efficy_sim = EfficySimulator().start()
    try:
        efficy_sim.upsert_persons([person(k, stamp="2024-05-02T10:00:00") for k in keys])  # all joined
        descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 200, "tail": False}
        with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
            try:
                result = sync_page(CFG, descriptor, efficy=efficy, apsis=apsis, states=store, dry_run=False)
                failure = None
            except ApiError as exc:
                result, failure = None, f"{type(exc).__name__}: {exc}"
    finally:
        efficy_sim.stop()
    opted_in = [k for k in keys if (sim.get_profile(CRM, str(k)) or {"consents": []})["consents"]]
    assert failure is None, f"page failed ({failure}); {len(opted_in)} of 40 persons opted in"
    assert result is not None and result.counters["failed"] == 0 and len(opted_in) == 40  # 3 created again


def test_an_attribute_change_re_creates_a_deleted_profile_with_its_consents(sim: ApsisSimulator) -> None:
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, person(7), None).result == "synced"  # a newsletter member, opted in
    assert apsis.delete_profile("7")
    renamed = {**person(7, stamp="2024-05-02T10:00:00"), "FIRSTNAME": "Renamed"}
    assert syncer.sync(7, renamed, store.get(CFG.integration_id, 7)).result == "synced"
    held = sim.get_profile(CRM, "7")
    assert held is not None and held["attributes"]["com.apsis1.attributes.firstname"] == "Renamed"
    assert (NEWS, "opt-in") in {(c["topic"], c["type"]) for c in held["consents"]}, "re-created without consent"


def test_a_404_while_the_profile_exists_is_no_evidence_it_is_gone(sim: ApsisSimulator) -> None:
    """A 404 to the consent POST for a profile APSIS still has (a deleted topic, say): nothing is planned again and
    the state is not reset; the error stays the integration's (retried, reported)."""
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, {**person(7), "profiles": []}, None).result == "synced"
    before = store.get(CFG.integration_id, 7)
    sim.add_fault(path_regex="/consents$", method="POST", status=404, count=10, content_type="application/problem+json",
                  body='{"title": "Not Found", "status": 404, "detail": "topic does not exist"}')  # fmt: skip
    with pytest.raises(ApiError):
        syncer.sync(7, person(7, stamp="2024-05-02T10:00:00"), before)
    after = store.get(CFG.integration_id, 7)
    assert after is not None and after.exists_in_apsis and after.attribute_hashes == before.attribute_hashes
    assert sim.get_profile(CRM, "7") is not None
