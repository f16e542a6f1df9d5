"""Person states written in batches (a full-sync page, import mode's Imports step): TransactWriteItems of up to
50 puts, each conditional on the revision its state was read at, a few transactions at once; a transaction one
of whose states changed since it was read writes nothing, and its states take the conditional put one by one.

Why no concurrent writer is overwritten: every put carries its own revision condition, checked by DynamoDB in
the same request that writes it. During a full sync the real-time worker parks its changes
(fullsync/parking.py) and pages and import files hold disjoint persons, so the conditions nearly always hold
and one call writes a page's whole chunk of states. The writers the conditions are for: the opt-out write-back
(its opt-out itself lives in the OPTOUTS item), and the real-time worker once a run has ended (a cancel
re-sends the parked changes at once, while a page's chunks in flight still write: until the page notices the
end, it batches).

BatchWriteItem, used here before, cannot carry a condition: it was preceded by one consistent read of the
revisions, and a real-time state written between that read and the write was overwritten by the page's older
one (a CRM opt-out withdrawn in that window lost: APSIS kept the page's opt-in, the stored state agreed with
it, so no later sync withdrew it). A transaction closes that window; on AWS it costs two write units a state
instead of one, and saves the read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..aws import client
from ..state import PersonState
from .dynamo import to_item
from .person_items import StaleWrite, state_item

if TYPE_CHECKING:
    from .persons import PersonStateStore

#: puts per TransactWriteItems (DynamoDB takes 100, 4 MB in all; a STATE item is about 1 KB). At least a page's
#: chunk (fullsync.page.CHUNK, 48): a chunk's states are then one request instead of two. On the local stack a
#: 10,000-person first load made 400 transactions of 25, and each request's fixed cost (signing, HTTP, moto's
#: dispatch) came on top of the per-item work in the process that also runs the page's APSIS calls.
TRANSACT_ITEMS = 50
#: a few transactions at once (each is one round trip)
BATCH_WORKERS = 4


def put_batch(
    store: PersonStateStore, table: str, states: list[PersonState], *, workers: int = BATCH_WORKERS
) -> list[PersonState]:
    """Store many states at once, none over a state stored since it was read; returns the ones refused.

    Each group of TRANSACT_ITEMS goes out as one transaction whose every put requires the stored revision to be
    the one its state was read at (absent, for a state read when nothing was stored). A group whose transaction
    is refused (a state changed since: the opt-out write-back, or the real-time worker once the run ended)
    writes nothing; its states then take the conditional `put` one by one, and those refused there
    (StaleWrite, ConflictingWrite: a newer or a changed state stored) are returned, for the caller to sync
    again from a fresh read."""
    if not states:
        return []
    groups = [states[i : i + TRANSACT_ITEMS] for i in range(0, len(states), TRANSACT_ITEMS)]
    if len(groups) == 1:
        return _write_group(store, table, groups[0])
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(groups)))) as pool:
        return [s for refused in pool.map(lambda group: _write_group(store, table, group), groups) for s in refused]


def _write_group(store: PersonStateStore, table: str, states: list[PersonState]) -> list[PersonState]:
    if _transact(table, states):
        return []
    refused = []
    for state in states:  # the transaction wrote nothing: each state on its own, with the whole put's checks
        try:
            store.put(state)
        except StaleWrite:
            refused.append(state)
    return refused


def _transact(table: str, states: list[PersonState]) -> bool:
    """One TransactWriteItems of `states`, each conditional on its revision; False when DynamoDB cancelled it
    (a condition failed, or another request touched one of the items meanwhile): nothing was written.
    botocore gives the call an idempotency token, so its own retry of a transaction that did land succeeds."""
    ddb = client("dynamodb")
    try:
        ddb.transact_write_items(TransactItems=[{"Put": _conditional_put(table, s)} for s in states])
    except ddb.exceptions.TransactionCanceledException:
        return False
    return True


def _conditional_put(table: str, state: PersonState) -> dict[str, Any]:
    put: dict[str, Any] = {"TableName": table, "Item": state_item(state), "ExpressionAttributeNames": {"#r": "rev"}}
    if state.revision:
        put["ConditionExpression"] = "#r = :r"
        put["ExpressionAttributeValues"] = to_item({":r": state.revision})
    else:  # read when nothing was stored (or an item stored before revisions existed)
        put["ConditionExpression"] = "attribute_not_exists(#r)"
    return put
