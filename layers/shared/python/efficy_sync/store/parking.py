"""The parked real-time changes of an integration whose full sync runs (fullsync/parking.py decides when to park
and when to drain; this module holds the items).

Item: pk "PARKED#<integration>", sk "<person key>": `parked_at` (the last park, microseconds, UTC), `run_id` (the
run it waits for), `changes` (how many changes of the person parked: ten changes of one person park once). No
TTL: a key is deleted by the drain (or the sweeper) that re-enqueued it, conditional on the `parked_at` it read.

A park is one transaction of three items: the lock's ConditionCheck (the run still holds the integration's
lock, `LOCK_ITEM`), this item's update and the run's `parked_messages` (and `parked_deletes`) counter.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..aws import client
from .dynamo import count_all, key, query_all, to_item
from .runs import RunStore

#: the index of the lock's ConditionCheck in the park transaction (its cancellation reason is the run's end)
LOCK_ITEM = 0


@dataclass(frozen=True)
class Parked:
    """One parked person: their key and when they were last parked (the drain's delete is conditional on it)."""

    person_key: int
    parked_at: str


def run_has_ended(error_response: dict[str, Any]) -> bool | None:
    """Reads a TransactionCanceledException of the park: True when the lock's condition failed (the run no
    longer holds the lock), False when the cancellation had another cause (a conflict, throttling, a condition
    on another item: try again), None when DynamoDB gave no reasons (unknown: try again, then give up)."""
    reasons: Sequence[dict[str, Any]] = error_response.get("CancellationReasons") or []
    if not reasons:
        return None
    lock = reasons[LOCK_ITEM] if len(reasons) > LOCK_ITEM else {}
    return lock.get("Code") == "ConditionalCheckFailed"


class ParkedKeys:
    """The PARKED# items of the state table (module docstring)."""

    def __init__(self, table_name: str) -> None:
        self._table = table_name
        self._runs = RunStore(table_name)  # the lock's condition and the run's counter of the transaction

    @staticmethod
    def _pk(integration_id: str) -> str:
        return f"PARKED#{integration_id}"

    def try_park(self, integration_id: str, person_key: int, run_id: str, *, deleted: bool = False) -> bool | str:
        """One attempt: True when parked, False when the run no longer holds the lock (it has ended), else why
        DynamoDB cancelled the transaction (a conflict, throttling, no reasons: worth another attempt)."""
        ddb = client("dynamodb")
        try:
            self._transact(integration_id, person_key, run_id, deleted)
        except ddb.exceptions.TransactionCanceledException as exc:
            if run_has_ended(exc.response):
                return False
            codes = [str(r.get("Code")) for r in exc.response.get("CancellationReasons") or []]
            return ", ".join(codes) or "no reasons given"
        return True

    def _transact(self, integration_id: str, person_key: int, run_id: str, deleted: bool) -> None:
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        counters = {"parked_messages": 1, **({"parked_deletes": 1} if deleted else {})}
        client("dynamodb").transact_write_items(
            TransactItems=[
                self._runs.lock_condition(integration_id, run_id),
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": key(self._pk(integration_id), str(int(person_key))),
                        "UpdateExpression": "SET parked_at = :now, run_id = :rid ADD changes :one",
                        "ExpressionAttributeValues": to_item({":now": now, ":rid": run_id, ":one": 1}),
                    }
                },
                self._runs.counter_update(integration_id, run_id, counters),
            ]
        )

    def items(self, integration_id: str, limit: int | None = None) -> Iterator[Parked]:
        """The parked persons, read consistently, in key order (as text); at most `limit`."""
        found = query_all(self._table, "pk = :pk", {":pk": self._pk(integration_id)}, consistent=True, limit=limit)
        for item in found:
            yield Parked(int(item["sk"]), str(item.get("parked_at", "")))

    def count(self, integration_id: str) -> int:
        return count_all(self._table, "pk = :pk", {":pk": self._pk(integration_id)})

    def forget(self, integration_id: str, parked: Parked) -> bool:
        """Deletes the item unless the person was parked again since it was read (False: it stays, for that run)."""
        ddb = client("dynamodb")
        try:
            ddb.delete_item(
                TableName=self._table,
                Key=key(self._pk(integration_id), str(parked.person_key)),
                ConditionExpression="parked_at = :seen",
                ExpressionAttributeValues=to_item({":seen": parked.parked_at}),
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True
