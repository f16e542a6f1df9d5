"""APSIS One answers 200 to a consent POST when it changed nothing (contracts/apsis-one.md section 3: "200 no
change", help article). Read as success, an opt-in APSIS did not apply (it keeps the person's opt-out) was
recorded as sent: the state said opted in, nothing was shown, and no later sync sent it again. A 200 is now
judged as a 409 is, on the consents read back: the type held is "unchanged", anything else the person's refusal
(recorded, shown, planned again), never recorded as sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, CRM, FAST, NEWS, SLOT, person
from tests.memory_store import MemoryPersonStateStore


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def _syncer(sim: ApsisSimulator, store: MemoryPersonStateStore) -> PersonSyncer:
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    return PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])


def test_an_opt_in_answered_200_but_not_applied_is_not_recorded_as_sent(sim: ApsisSimulator) -> None:
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    assert syncer.sync(7, person(7), None).result == "synced"  # opted in
    out = {**person(7, stamp="2024-05-02T10:00:00"), "profiles": []}
    assert syncer.sync(7, out, store.get(CFG.integration_id, 7)).result == "synced"  # opted out
    sim.add_fault(path_regex="/consents$", method="POST", status=200, count=1)  # "no change": opt-out kept
    back = person(7, stamp="2024-05-03T10:00:00")
    outcome = syncer.sync(7, back, store.get(CFG.integration_id, 7))
    held = {(c["topic"], c["type"]) for c in sim.get_profile(CRM, "7")["consents"]}
    assert (NEWS, "opt-out") in held
    state = store.get(CFG.integration_id, 7)
    assert state is not None and state.consents[SLOT] != "opt-in", "recorded an opt-in APSIS does not hold"
    assert outcome.result == "failed" and state.error_category == "consent_refused"
    assert syncer.sync(7, back, state).result == "synced"  # planned again: APSIS takes it this time
    assert (NEWS, "opt-in") in {(c["topic"], c["type"]) for c in sim.get_profile(CRM, "7")["consents"]}


def test_a_200_for_the_type_already_held_is_unchanged(sim: ApsisSimulator) -> None:
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    assert syncer.sync(7, person(7), None).result == "synced"
    state = store.get(CFG.integration_id, 7)
    stale = state.model_copy(update={"consents": {SLOT: "unknown"}})  # a timed-out call: sent again
    store.put(stale)
    sim.add_fault(path_regex="/consents$", method="POST", status=200, count=1)
    assert syncer.sync(7, person(7, stamp="2024-05-02T10:00:00"), store.get(CFG.integration_id, 7)).result == "synced"
    assert store.get(CFG.integration_id, 7).consents[SLOT] == "opt-in"


@pytest.mark.parametrize("status", [202, 207])
def test_an_opt_in_answered_with_another_2xx_is_judged_on_the_read_back(sim: ApsisSimulator, status: int) -> None:
    """APSIS lists 202 (accepted, not applied yet) and 207 (multi-status: part of it failed) among its success
    codes (contracts/apsis-one.md section 5); neither says the consent is in place. Read as "unchanged", an opt-in
    APSIS did not apply was recorded as sent and never sent again, as the 200 was."""
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    assert syncer.sync(7, person(7), None).result == "synced"
    out = {**person(7, stamp="2024-05-02T10:00:00"), "profiles": []}
    assert syncer.sync(7, out, store.get(CFG.integration_id, 7)).result == "synced"
    sim.add_fault(path_regex="/consents$", method="POST", status=status, count=1)
    back = person(7, stamp="2024-05-03T10:00:00")
    outcome = syncer.sync(7, back, store.get(CFG.integration_id, 7))
    state = store.get(CFG.integration_id, 7)
    assert state is not None and state.consents[SLOT] != "opt-in", "recorded an opt-in APSIS does not hold"
    assert outcome.result == "failed"
    assert state.consents[SLOT] == "unknown"  # APSIS may apply it yet: the next sync sends its decision again
    assert syncer.sync(7, back, state).result == "synced"  # read first: the opt-out APSIS still holds is kept
    assert (NEWS, "opt-out") in {(c["topic"], c["type"]) for c in sim.get_profile(CRM, "7")["consents"]}


@pytest.mark.parametrize("status", [202, 207])
def test_an_opt_in_answered_202_that_apsis_applies_later_is_withdrawn_by_the_crm_s_opt_out(
    sim: ApsisSimulator, status: int
) -> None:
    """Stored as the opt-out it replaced, the opt-in APSIS applied after its 202 was never withdrawn: the CRM's
    next opt-out planned nothing against a slot that read "opt-out", and APSIS kept the person subscribed."""
    store = MemoryPersonStateStore()
    syncer = _syncer(sim, store)
    assert syncer.sync(7, person(7), None).result == "synced"
    out = {**person(7, stamp="2024-05-02T10:00:00"), "profiles": []}
    assert syncer.sync(7, out, store.get(CFG.integration_id, 7)).result == "synced"
    sim.add_fault(path_regex="/consents$", method="POST", status=status, count=1)  # accepted, applied later
    assert syncer.sync(7, person(7, stamp="2024-05-03T10:00:00"), store.get(CFG.integration_id, 7)).result == "failed"
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    apsis.set_consent("7", NEWS, "email", "opt-in")  # APSIS applies the queued opt-in
    out_again = {**person(7, stamp="2024-05-04T10:00:00"), "profiles": []}
    assert syncer.sync(7, out_again, store.get(CFG.integration_id, 7)).result == "synced"
    held = {(c["topic"], c["type"]) for c in sim.get_profile(CRM, "7")["consents"]}
    assert (NEWS, "opt-out") in held and (NEWS, "opt-in") not in held
