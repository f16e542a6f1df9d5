"""A page's held states after its run ended: conditional puts, never a batch over a newer real-time state.

BatchWriteItem carries no condition; put_batch first re-reads the stored revisions and writes unconditionally
those still unchanged. That holds while the real-time worker is parked. A cancel re-sends the parked changes
while a page's chunks may still be syncing, so a real-time state can land between that read and the write.
The store below writes its batches with that window wide open, to show which path a write takes.
"""

from __future__ import annotations

from efficy_sync.fullsync.page_states import BatchedStates
from efficy_sync.state import PersonState
from efficy_sync.store.person_items import state_document

from tests.memory_store import MemoryPersonStateStore

SLOT = "usercreated.topics.newsletter-ab12|email"


class RacingStore(MemoryPersonStateStore):
    """put_batch as if a newer write landed between its revision read and its unconditional write."""

    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        for state in states:
            with self._lock:
                self._states[(state.integration_id, int(state.person_key))] = (state_document(state), 99)
        return []


def page_state() -> PersonState:
    """What an older page read decided: the person is a member, opted in."""
    return PersonState(
        integration_id="acme", person_key="7", change_stamp="2026-01-01T10:00:00", consents={SLOT: "opt-in"}
    )


def realtime_state(store: MemoryPersonStateStore) -> None:
    """The real-time worker, after the cancel: the person left the profile, the opt-out was sent."""
    store.put(
        PersonState(
            integration_id="acme", person_key="7", change_stamp="2026-01-01T10:05:00", consents={SLOT: "opt-out"}
        )
    )


def test_while_the_run_lasts_a_chunk_is_written_in_batches() -> None:
    store = RacingStore()
    batched = BatchedStates(store)
    batched.put(page_state())
    realtime_state(store)
    batched.flush()
    assert store.get("acme", 7).consents == {SLOT: "opt-in"}  # the batch path: why it is kept to parked runs


def test_once_the_run_ended_a_chunk_takes_the_conditional_put_and_the_newer_state_wins() -> None:
    store = RacingStore()
    batched = BatchedStates(store)
    batched.put(page_state())
    realtime_state(store)
    batched.run_ended()
    refused = batched.flush()
    assert refused == {7}  # the caller syncs the person again from a fresh read
    assert store.get("acme", 7).consents == {SLOT: "opt-out"}
