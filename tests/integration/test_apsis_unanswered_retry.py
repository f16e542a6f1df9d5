"""A consent write whose first attempt went unanswered may have been applied, whatever its last attempt said.

The opt-in's first attempt reaches APSIS One but answers after the client's read timeout; the client's retries
then meet the account's rate limit (429), or the invocation's deadline (OutOfTime). Both were read as "never
reached APSIS": nothing was recorded, and once the CRM withdrew the membership the next sync had nothing to
withdraw, so APSIS kept the opt-in for good. The retry history now says an attempt went unanswered: the
opt-in is recorded as unknown and the next sync sends its decision.

The real PersonSyncer and ApsisClient against the APSIS One simulator over HTTP (its delay and 429 faults);
the state table is the in-memory store with the same contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import OutOfTime, RateLimited, acknowledgeable
from efficy_sync.clients.http import RetryPolicy, deadline
from efficy_sync.state import UNKNOWN
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.testing import wait_for

from tests.integration.test_diff_calls import CFG, NEWS, SLOT, person
from tests.memory_store import MemoryPersonStateStore

#: a read timeout shorter than the simulator's delay: the first attempt is applied but answered too late
POLICY = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=0.5)
DELAY_MS = 1500
#: the deadline test's: the opt-in's GET of the consents, then its POST, must start with MIN_CALL_SECONDS (1 s)
#: left, and the POST's timed-out attempt must leave less than that for a retry. Within 1.3 s and a read timeout
#: of 0.5 s that left the GET 0.3 s (a loaded CI machine took longer: OutOfTime before the POST, nothing sent);
#: within 1.8 s and 1 s it has 0.8 s, and the attempt still times out half a second before APSIS answers.
DEADLINE_POLICY = dataclasses.replace(POLICY, read_timeout=1.0)
DEADLINE_SECONDS = 1.8


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def consents(sim: ApsisSimulator) -> set[tuple[str, str]]:
    profile = sim.get_profile(CFG.apsis.keyspace, "7") or {"consents": []}
    return {(c["topic"], c["type"]) for c in profile["consents"]}


def outside(stamp: str) -> dict:
    return {**person(7, stamp=stamp), "profiles": []}


def _joined_then_left(
    sim: ApsisSimulator, syncer: PersonSyncer, store: MemoryPersonStateStore, fail: type, seconds: float | None
) -> None:
    """The person joins the CRM profile and the opt-in fails with `fail` after a first attempt that APSIS
    applies too late (within an invocation of `seconds`, if given); then the CRM takes them out again and the
    retry syncs them from that fresh read."""
    with pytest.raises(fail) as caught, deadline(seconds) if seconds else contextlib.nullcontext():
        syncer.sync(7, person(7, stamp="2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))
    assert not acknowledgeable(caught.value) and caught.value.maybe_applied
    assert store.get(CFG.integration_id, 7).consents.get(SLOT) == UNKNOWN  # what went out may be there
    sim.clear_faults()
    # the first attempt lands (DELAY_MS after it was sent: waited for, not slept, as a loaded machine lags)
    wait_for("the late attempt's opt-in", lambda: (NEWS, "opt-in") in consents(sim), timeout=10, interval=0.05)

    syncer.sync(7, outside("2024-05-03T10:00:00"), store.get(CFG.integration_id, 7))

    assert (NEWS, "opt-out") in consents(sim), "APSIS keeps an opt-in the CRM withdrew"


def test_an_opt_in_that_timed_out_then_met_429_is_withdrawn_when_the_crm_opts_out(sim: ApsisSimulator) -> None:
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=POLICY)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, outside("2024-05-01T10:00:00"), None).result == "synced"  # a profile, no consent yet
    sim.add_fault(path_regex="/consents$", method="POST", delay_ms=DELAY_MS, count=1)
    sim.add_fault(path_regex="/consents$", method="POST", status=429, count=10, headers={"Retry-After": "0"})

    _joined_then_left(sim, syncer, store, RateLimited, None)


def test_an_opt_in_that_timed_out_then_ran_out_of_time_is_withdrawn_when_the_crm_opts_out(
    sim: ApsisSimulator,
) -> None:
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=DEADLINE_POLICY)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, outside("2024-05-01T10:00:00"), None).result == "synced"
    apsis.list_keyspaces()  # the token in hand: the deadline is spent on the consent alone
    sim.add_fault(path_regex="/consents$", method="POST", delay_ms=DELAY_MS, count=1)

    _joined_then_left(sim, syncer, store, OutOfTime, DEADLINE_SECONDS)


def test_a_429_alone_is_still_no_sign_that_apsis_applied_the_call(sim: ApsisSimulator) -> None:
    """Only the attempts before it decide: a call refused at every attempt wrote nothing (no unknown slot)."""
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=POLICY)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    syncer.sync(7, outside("2024-05-01T10:00:00"), None)
    sim.add_fault(path_regex="/consents$", method="POST", status=429, count=10, headers={"Retry-After": "0"})

    with pytest.raises(RateLimited) as caught:
        syncer.sync(7, person(7, stamp="2024-05-02T10:00:00"), store.get(CFG.integration_id, 7))

    assert not caught.value.maybe_applied
    assert SLOT not in store.get(CFG.integration_id, 7).consents


def test_a_retry_logged_by_urllib3_names_no_person_in_clear(
    sim: ApsisSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    """urllib3 logs each retry with the request's path, outside our formatter: the person's key is hashed."""
    import logging

    from efficy_sync.pii import hash_key

    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=POLICY)
    apsis.create_profile("424242")
    sim.add_fault(path_regex="/profiles/424242/", method="PATCH", delay_ms=DELAY_MS, count=1)
    with caplog.at_level(logging.WARNING, logger="urllib3.connectionpool"):
        apsis.patch_attributes("424242", {"com.apsis1.attributes.firstname": "Jo"})
    retries = [r.getMessage() for r in caplog.records if r.name == "urllib3.connectionpool"]
    assert retries and all("424242" not in m and hash_key(424242) in m for m in retries), retries
