"""APSIS One lists 200/201/202/204/207 as success codes (contracts/apsis-one.md section 5). A 207 Multi-Status
to an attribute or tag PATCH says part of the body was applied and part refused; read as done, the values were
recorded in the person's state as sent and the next diff sent nothing: silent drift. A 207 (or a 2xx whose body
lists errors) is now `PartlyApplied`: never recorded as sent (marked unknown), the outcome says why, and the next
sync sends the values again. A 202 on a PATCH is accepted, taken as sent (clients/apsis_answers.py).

The real PersonSyncer, page worker and ApsisClient against the APSIS One simulator over HTTP; the simulator's
fault answers 207 after applying the write (`apply`), or without applying it."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import ApsisUnavailable, AuthError, RateLimited, acknowledgeable
from efficy_sync.fullsync.page import sync_page
from efficy_sync.fullsync.tags import _tag_person
from efficy_sync.state import unsure_hash, value_hash
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, FIRSTNAME, NEWS, person
from tests.memory_store import MemoryPersonStateStore

TAG = "newsletter-readers"
ATTRIBUTES = "/sections/[^/]+/attributes$"
TAGS = "/sections/[^/]+/tags$"
ERRORS = json.dumps({"errors": [{"attribute": FIRSTNAME, "message": "refused"}]})


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def _client(sim: ApsisSimulator) -> ApsisClient:
    return ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)


def _syncer(sim: ApsisSimulator, store: MemoryPersonStateStore) -> PersonSyncer:
    return PersonSyncer(CFG, _client(sim), store, email_lookup=lambda address: [])


def _patches(sim: ApsisSimulator, ending: str) -> int:
    return sum(n for k, n in sim.calls().items() if k.startswith("PATCH") and k.endswith(ending))


def _renamed(stamp: str = "2024-05-02T10:00:00") -> dict:
    return {**person(7, stamp), "FIRSTNAME": "Renamed"}


@pytest.mark.parametrize("applied", [True, False])
@pytest.mark.parametrize(("status", "body"), [(207, ""), (207, ERRORS), (200, ERRORS)])
def test_an_attribute_patch_answered_in_part_is_not_recorded_as_sent(
    sim: ApsisSimulator, status: int, body: str, applied: bool
) -> None:
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    assert syncer.sync(7, person(7), None).result == "synced"
    sim.add_fault(
        path_regex="/v2/.*" + ATTRIBUTES, method="PATCH", status=status, body=body, apply=applied, count=1,
        content_type="application/json",
    )  # fmt: skip
    outcome = syncer.sync(7, _renamed(), store.get(CFG.integration_id, 7))
    state = store.get(CFG.integration_id, 7)
    assert outcome.result == "failed" and state.error_category == "partly_applied", (outcome, state)
    assert state.attribute_hashes[FIRSTNAME] != value_hash("Renamed"), "recorded as sent"
    assert state.exists_in_apsis  # never read as "no such profile"
    assert sim.get_profile(CRM, "7") is not None
    before = _patches(sim, "/attributes")
    assert syncer.sync(7, _renamed(), state).result == "synced"  # planned again
    assert _patches(sim, "/attributes") == before + 1
    assert sim.get_profile(CRM, "7")["attributes"][FIRSTNAME] == "Renamed"
    assert store.get(CFG.integration_id, 7).attribute_hashes[FIRSTNAME] == value_hash("Renamed")


INTEGRATION_PROBLEMS = [
    (207, {"status": 403, "title": "Forbidden"}, AuthError),
    (200, {"errors": [{"attribute": FIRSTNAME, "status": 403, "message": "not writable for the keyspace"}]}, AuthError),
    (207, {"errors": [{"attribute": FIRSTNAME, "status": 400}, {"attribute": "x", "status": 503}]}, ApsisUnavailable),
    (200, {"status": 429, "title": "Too Many Requests"}, RateLimited),
]


@pytest.mark.parametrize(("status", "body", "expected"), INTEGRATION_PROBLEMS)
def test_a_2xx_whose_body_names_the_integration_s_failure_is_raised_as_it_not_recorded_on_the_person(
    sim: ApsisSimulator, status: int, body: dict, expected: type[Exception]
) -> None:
    """A permission refused, the account's rate or APSIS failing, named inside a success answer, is the
    integration's failure as the same status on the response would be: raised (the change is retried, then
    dead-lettered and alarmed), never the person's `partly_applied` (recorded and acknowledged)."""
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    assert syncer.sync(7, person(7), None).result == "synced"
    sim.add_fault(
        path_regex="/v2/.*" + ATTRIBUTES, method="PATCH", status=status, body=json.dumps(body), apply=True, count=1,
        content_type="application/json",
    )  # fmt: skip
    with pytest.raises(expected) as raised:
        syncer.sync(7, _renamed(), store.get(CFG.integration_id, 7))
    assert not acknowledgeable(raised.value)
    state = store.get(CFG.integration_id, 7)
    assert state.error_category != "partly_applied", state
    assert state.attribute_hashes[FIRSTNAME] == unsure_hash(value_hash("F7")), "not marked unknown (APSIS took it)"
    assert syncer.sync(7, _renamed(), state).result == "synced"  # the retry sends the values again
    assert store.get(CFG.integration_id, 7).attribute_hashes[FIRSTNAME] == value_hash("Renamed")


def test_an_attribute_patch_answered_202_is_accepted_as_sent(sim: ApsisSimulator) -> None:
    """APSIS documents 202 as success: taken as sent (an idempotent merge-patch APSIS accepted)."""
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    syncer.sync(7, person(7), None)
    sim.add_fault(path_regex="/v2/.*" + ATTRIBUTES, method="PATCH", status=202, apply=True, count=1)
    assert syncer.sync(7, _renamed(), store.get(CFG.integration_id, 7)).result == "synced"
    assert store.get(CFG.integration_id, 7).attribute_hashes[FIRSTNAME] == value_hash("Renamed")


def test_a_create_with_attributes_answered_207_is_planned_again(sim: ApsisSimulator) -> None:
    """The v1 PATCH creates the profile: a 207 leaves it maybe created, its values unproven; never sent again
    with other version ids, and the next sync sends the values again."""
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    sim.add_fault(path_regex="^/audience/.*" + ATTRIBUTES, method="PATCH", status=207, apply=True, count=1)
    outcome = syncer.sync(7, person(7), None)
    assert outcome.result == "failed" and outcome.error_category == "partly_applied"
    state = store.get(CFG.integration_id, 7)
    assert state is not None and state.exists_in_apsis  # maybe created: never taken for absent
    assert state.attribute_hashes.get(FIRSTNAME) != value_hash("F7")
    assert _patches(sim, "/attributes") == 1  # no second try with the version ids listed again
    assert syncer.sync(7, person(7), state).result == "synced"
    assert store.get(CFG.integration_id, 7).attribute_hashes[FIRSTNAME] == value_hash("F7")


@pytest.mark.parametrize("applied", [True, False])
def test_a_tag_patch_answered_207_is_not_recorded_as_sent(sim: ApsisSimulator, applied: bool) -> None:
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    out = {**person(7), "profiles": []}
    assert syncer.sync(7, out, None).result == "synced"  # no tag yet
    sim.add_fault(path_regex=TAGS, method="PATCH", status=207, apply=applied, count=1)
    outcome = syncer.sync(7, person(7, "2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))
    state = store.get(CFG.integration_id, 7)
    assert outcome.result == "failed" and state.error_category == "partly_applied"
    assert TAG in state.tags_unknown, "recorded as sent"
    before = _patches(sim, "/tags")
    assert syncer.sync(7, person(7, "2024-05-02T10:00:00"), state).result == "synced"
    assert _patches(sim, "/tags") == before + 1  # sent again
    assert sim.get_profile(CRM, "7")["tags"] == [TAG]
    assert TAG not in store.get(CFG.integration_id, 7).tags_unknown


def test_an_untag_answered_207_is_sent_again(sim: ApsisSimulator) -> None:
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    syncer.sync(7, person(7), None)
    sim.add_fault(path_regex=TAGS, method="PATCH", status=207, apply=False, count=1)
    out = {**person(7, "2024-05-02T10:00:00"), "profiles": []}
    assert syncer.sync(7, out, store.get(CFG.integration_id, 7)).result == "failed"
    assert syncer.sync(7, out, store.get(CFG.integration_id, 7)).result == "synced"
    assert sim.get_profile(CRM, "7")["tags"] == []


def test_a_query_tag_answered_207_is_unknown_and_sent_again_by_the_next_run(sim: ApsisSimulator) -> None:
    """The Tags step records a query tag APSIS took on the state itself (fullsync/tags.py)."""
    store = MemoryPersonStateStore()
    _syncer(sim, store).sync(7, person(7), None)
    apsis = _client(sim)
    sim.add_fault(path_regex=TAGS, method="PATCH", status=207, count=1)
    assert not _tag_person(CFG, apsis, store, 7, {"vip": True})
    state = store.get(CFG.integration_id, 7)
    assert "vip" in state.tags_unknown, "recorded as sent"  # the next run's tag_delta sends it again
    assert _tag_person(CFG, apsis, store, 7, {"vip": True})
    state = store.get(CFG.integration_id, 7)
    assert state.tags.get("vip") is True and "vip" not in state.tags_unknown


def test_a_query_tag_answered_207_naming_a_refused_permission_fails_the_step_and_is_unknown(
    sim: ApsisSimulator,
) -> None:
    """The integration's failure inside a 207 is raised (the Tags step retries, then fails the run), and the tag
    APSIS may have taken is unknown on the state: never a tag set in APSIS that no state knows of."""
    store = MemoryPersonStateStore()
    _syncer(sim, store).sync(7, person(7), None)
    apsis = _client(sim)
    sim.add_fault(
        path_regex=TAGS, method="PATCH", status=207, body=json.dumps({"status": 403}), apply=True, count=1,
        content_type="application/json",
    )  # fmt: skip
    with pytest.raises(AuthError):
        _tag_person(CFG, apsis, store, 7, {"vip": True})
    assert "vip" in store.get(CFG.integration_id, 7).tags_unknown
    assert _tag_person(CFG, apsis, store, 7, {"vip": True})
    assert store.get(CFG.integration_id, 7).tags.get("vip") is True


def test_a_full_sync_page_does_not_record_a_207_attribute_patch_as_sent(sim: ApsisSimulator, monkeypatch) -> None:
    monkeypatch.setenv("EFFICY_SYNC_APSIS_RATE", "100000")
    store = MemoryPersonStateStore()
    _syncer(sim, store).sync(7, person(7), None)
    efficy_sim = EfficySimulator().start()
    try:
        efficy_sim.upsert_persons([_renamed()])
        sim.add_fault(path_regex="/v2/.*" + ATTRIBUTES, method="PATCH", status=207, apply=True, count=1)
        descriptor = {"page": 0, "first": 0, "pages": 1, "page_size": 200, "tail": False}
        with EfficyClient(efficy_sim.url, efficy_sim.api_key, policy=FAST) as efficy:
            result = sync_page(CFG, descriptor, efficy=efficy, apsis=_client(sim), states=store, dry_run=False)
    finally:
        efficy_sim.stop()
    assert result.counters["failed"] == 1
    state = store.get(CFG.integration_id, 7)
    assert state.error_category == "partly_applied"
    assert state.attribute_hashes[FIRSTNAME] != value_hash("Renamed")


def test_a_delete_answered_207_is_retried_not_recorded(sim: ApsisSimulator) -> None:
    apsis = _client(sim)
    _syncer(sim, MemoryPersonStateStore()).sync(7, person(7), None)
    sim.add_fault(path_regex="/profiles/7$", method="DELETE", status=207, count=1)
    with pytest.raises(ApsisUnavailable) as raised:
        apsis.delete_profile("7")
    assert raised.value.maybe_applied
    assert apsis.delete_profile("7") is True
    sim.add_fault(path_regex="/profiles/8$", method="DELETE", status=202, count=1)
    assert apsis.delete_profile("8") is True  # accepted: taken as done


def test_an_import_poll_answered_202_is_still_running_and_207_unreadable(sim: ApsisSimulator) -> None:
    apsis = _client(sim)
    sim.add_fault(path_regex="/imports/x1$", method="GET", status=202, body="", count=1)
    assert apsis.get_import("x1") == {"status": "in_progress"}
    sim.add_fault(path_regex="/imports/x1$", method="GET", status=207, body="{}", count=1)
    with pytest.raises(ApsisUnavailable):
        apsis.get_import("x1")
    sim.add_fault(path_regex="/imports$", method="POST", status=207, body='{"import_id": "x"}', count=1)
    with pytest.raises(ApsisUnavailable):
        apsis.create_import({"x": 1})


CONSENTS = "/consents$"
CONSENT_ERRORS = json.dumps({"errors": [{"field": "topic_discriminator", "message": "refused"}]})


def _with_profile(sim: ApsisSimulator, consent: str | None) -> ApsisClient:
    client = _client(sim)
    client.create_profile("9")
    if consent:
        client.set_consent("9", NEWS, "email", consent)
    return client


def test_an_opt_out_answered_201_listing_errors_and_not_held_is_retried_not_recorded_as_sent(
    sim: ApsisSimulator,
) -> None:
    """An opt-out 'created' whose body lists errors, while the profile still holds the opt-in: read as created,
    it was recorded as sent and the person could be mailed. Read back, it is the supported transition APSIS did
    not make: ConsentConflict, retried."""
    from efficy_sync.clients.apsis import ConsentConflict

    client = _with_profile(sim, "opt-in")
    sim.add_fault(path_regex=CONSENTS, method="POST", status=201, body=CONSENT_ERRORS, content_type="application/json")
    with pytest.raises(ConsentConflict):
        client.set_consent("9", NEWS, "email", "opt-out")
    sim.clear_faults()
    held = sim.get_profile(CRM, "9")["consents"]
    assert [(c["topic"], c["type"]) for c in held] == [(NEWS, "opt-in")]


def test_a_consent_created_listing_errors_is_judged_on_what_apsis_holds(sim: ApsisSimulator) -> None:
    """(A 204 carries no body over HTTP: nothing to list.) Applied all the same: what APSIS holds is the requested type, "unchanged". Not applied: ConsentRefused,
    maybe applied (its slot stored unknown, sent again by the next sync), never "created"."""
    from efficy_sync.clients.errors import ConsentRefused

    client = _with_profile(sim, None)
    fault = {"path_regex": CONSENTS, "method": "POST", "status": 201, "body": CONSENT_ERRORS}
    sim.add_fault(**fault, content_type="application/json", count=1)
    with pytest.raises(ConsentRefused) as refused:
        client.set_consent("9", NEWS, "email", "opt-in")
    assert refused.value.maybe_applied
    sim.add_fault(**fault, content_type="application/json", count=1, apply=True)
    assert client.set_consent("9", NEWS, "email", "opt-in") == "unchanged"
