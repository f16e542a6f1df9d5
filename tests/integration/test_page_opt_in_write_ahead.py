"""A full-sync page's first opt-in whose state write failed was never withdrawn.

The page (`fresh=True`: the chunk's states read just before) sent a new person's first opt-in, then the chunk's
batched state write failed with an error that is not a condition (DynamoDB throttled past the SDK's retries).
The Map retried the page; by then the CRM had taken the person out of the profile. The real-time path's
write-ahead let such a retry withdraw the opt-in; a page wrote none, so its retry read "never opted in" and
APSIS kept the opt-in for good. A chunk's write-aheads now go out in one request before its syncs start
(page_states.chunk_write_aheads)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.fullsync.page import _sync_batch
from efficy_sync.fullsync.page_states import BatchedStates
from efficy_sync.state import PersonState
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.sync import PersonSyncer

from tests.integration.test_diff_calls import CFG, FAST, person
from tests.integration.test_state_write_failure_keeps_opt_in import KEY, apsis_sim, consent  # noqa: F401
from tests.support import create_pk_sk_table


class ThrottledBatch(PersonStateStore):
    """The chunk's batched state write is refused `failures` times, as DynamoDB does once the SDK's retries ran
    out; write-aheads (announce_many, before any APSIS call) and single puts are counted."""

    def __init__(self, table: str) -> None:
        super().__init__(table)
        self.failures, self.puts = 1, 0
        self.aheads: list[int] = []

    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        if self.failures:
            self.failures -= 1
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}},
                "TransactWriteItems",
            )
        return super().put_batch(states, workers=workers)

    def announce_many(self, states: list[PersonState]) -> list[PersonState]:
        self.aheads.append(len(states))
        return super().announce_many(states)

    def put(self, state: PersonState) -> None:
        self.puts += 1
        super().put(state)


def page(store: PersonStateStore, apsis: ApsisClient, persons: list[dict[str, Any]]) -> None:
    batched = BatchedStates(store)
    syncer = PersonSyncer(CFG, apsis, batched, email_lookup=lambda address: [])
    plain = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    with ThreadPoolExecutor(max_workers=4) as pool:
        _sync_batch(pool, syncer, store, [dict(p) for p in persons], batched=batched, plain=plain)


def test_a_page_opt_in_whose_state_write_failed_is_withdrawn_when_the_crm_opts_out(
    in_process_aws: str,
    apsis_sim: Any,
) -> None:
    create_pk_sk_table("state", in_process_aws)
    store = ThrottledBatch("state")
    apsis = ApsisClient(apsis_sim.url, "putfail", "putfail-secret", section=CFG.apsis.section, policy=FAST)

    # 1. the page opts the new person in; the chunk's state write after it fails: the page fails
    with pytest.raises(ClientError):
        page(store, apsis, [{**person(KEY, "2024-05-01T09:00:00"), "profiles": [12]}])
    assert consent(apsis_sim) == "opt-in"

    # 2. the CRM takes the person out of profile 12; 3. the Map retries the page, reading Efficy again
    page(store, apsis, [{**person(KEY, "2024-05-01T09:10:00"), "profiles": []}])

    stored = store.get(CFG.integration_id, KEY)
    assert consent(apsis_sim) == "opt-out", (
        f"APSIS One still holds the opt-in the failed page sent (stored consents {stored.consents if stored else None})"
    )


def test_a_chunk_s_write_aheads_share_requests(in_process_aws: str, apsis_sim: Any) -> None:
    """The price: a chunk of new persons about to be opted in announces in one request, not one per person, and
    their syncs write none of their own."""
    create_pk_sk_table("state", in_process_aws)
    store = ThrottledBatch("state")
    store.failures = 0
    apsis = ApsisClient(apsis_sim.url, "putfail", "putfail-secret", section=CFG.apsis.section, policy=FAST)
    persons = [{**person(KEY + i, "2024-05-01T09:00:00"), "profiles": [12]} for i in range(24)]

    page(store, apsis, persons)

    assert store.aheads == [24]  # every new person's opt-in announced first, in one request
    assert store.puts == 0  # the syncs found their write-aheads stored
    for i in range(24):
        stored = store.get(CFG.integration_id, KEY + i)
        assert stored is not None and stored.last_outcome == "synced", stored
