"""Person states written in batches (import mode's Imports step): BatchWriteItem, 25 items a call, a few calls
at once, UnprocessedItems sent again with backoff; a state changed since it was read takes the conditional put.

Why no concurrent writer is overwritten (see `put_batch`): during a full sync the real-time worker parks its
changes (fullsync/parking.py), pages and import files hold disjoint persons, and the only other writer of a
person's STATE item is the opt-out write-back, whose opt-out itself is never in that item. Once the run has
ended (a cancel: the parked changes apply again), the writers still finishing their work (a page's chunks in
flight, an import file in flight) stop using batches and take the conditional put (fullsync/page_states.py,
fullsync/collect.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from ..state import PersonState
from .dynamo import BATCH_WRITE_ITEMS as BATCH_WRITE_ITEMS
from .dynamo import BatchWriteIncomplete as BatchWriteIncomplete
from .dynamo import batch_get, batch_write
from .person_items import StaleWrite, _key, state_item

if TYPE_CHECKING:
    from .persons import PersonStateStore

#: a few BatchWriteItem calls at once (each is one round trip of up to 25 puts)
BATCH_WORKERS = 4
BATCH_ATTEMPTS = 8
BATCH_BACKOFF = 0.05  # seconds, doubled per attempt, full jitter


def put_batch(
    store: PersonStateStore, table: str, states: list[PersonState], *, workers: int = BATCH_WORKERS
) -> list[PersonState]:
    """Store many states at once where no concurrent writer can be overwritten; returns the ones refused.

    BatchWriteItem cannot carry a condition, so first one consistent read (BatchGetItem of the STATE items'
    revision, 100 keys a call) checks that each stored item is still the revision its state was read at.
    Those go out unconditionally, 25 per BatchWriteItem, `workers` calls at once (UnprocessedItems retried
    with backoff); the others, changed since (in a full sync only the opt-out write-back can do that: the
    real-time worker is parked), take the conditional `put`, and a refused one (StaleWrite) is returned.

    Why the milliseconds between that read and the write are safe: an opt-out is never in the STATE item.
    The write-back records it in the person's OPTOUTS item (conditional, per slot) before it syncs, and
    every read merges the live records back (`merge_optouts`): a slot with a live opt-out reads "opt-out",
    or "unknown" (sent again) when our opt-in is close to it. So a batched STATE that lands on top of the
    write-back's own STATE write cannot lose the opt-out; at worst its older stamp makes the next sync
    compare the person again."""
    if not states:
        return []
    revisions = _revisions(table, states[0].integration_id, [s.person_key for s in states])
    same = [s for s in states if revisions.get(str(s.person_key), 0) == s.revision]
    changed = [s for s in states if revisions.get(str(s.person_key), 0) != s.revision]
    batches = [same[i : i + BATCH_WRITE_ITEMS] for i in range(0, len(same), BATCH_WRITE_ITEMS)]
    if batches:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(batches)))) as pool:
            list(pool.map(lambda batch: _write_batch(table, batch), batches))
    refused = []
    for state in changed:
        try:
            store.put(state)
        except StaleWrite:
            refused.append(state)
    return refused


def _revisions(table: str, integration_id: str, keys: Iterable[int | str]) -> dict[str, int]:
    """person key -> stored STATE revision (absent: nothing stored), read consistently."""
    wanted = list(dict.fromkeys(str(k) for k in keys))
    items = batch_get(table, [_key(integration_id, k) for k in wanted], projection="pk, rev")
    return {str(item["pk"]).rsplit("#", 1)[1]: int(item.get("rev", 0)) for item in items}


def _write_batch(table: str, states: list[PersonState]) -> None:
    """One batch of states, unconditionally (UnprocessedItems sent again with backoff)."""
    batch_write(table, [state_item(s) for s in states], attempts=BATCH_ATTEMPTS, backoff=BATCH_BACKOFF)
