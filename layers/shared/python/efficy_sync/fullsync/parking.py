"""Real-time changes that wait while their integration runs a full sync (DESIGN §1, deferral).

The contact-changes queue and its event source serve every integration, so they are never paused. Instead the
worker parks the person's key here and acknowledges the message; one item per person ("PARKED#<integration>" /
"<key>"), so ten changes of one person park once. When the run ends, the keys go back on the queue as
"Resync" changes and the worker refetches each person: the newest Efficy data wins, whatever the full sync wrote.

The race at the end is closed by the park itself: it is a transaction that also checks that the run still
holds the lock. The run releases the lock first and drains afterwards, so a key parked at all was parked
before the release and the drain (or the sweeper, if the drain died) finds it.

Only the lock's own condition failing means "the run has ended" (and the change is applied at once). DynamoDB
cancels a transaction for other reasons too, chiefly a TransactionConflict on the run's shared counter when
several workers park at once: those are tried again (bounded, with jitter), and if they keep failing the park
raises, so the message is retried later rather than applied in the middle of the full sync.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ..aws import client
from ..changes import ContactChange
from ..queue import enqueue_changes
from .runs import RunStore

#: attempts at one park when DynamoDB cancels it for a reason other than the run's end
PARK_ATTEMPTS = 6
PARK_BACKOFF = 0.05  # seconds, doubled per attempt, full jitter
#: the index of the lock's ConditionCheck in the park transaction (its cancellation reason is the run's end)
LOCK_ITEM = 0


class ParkingContended(Exception):
    """DynamoDB kept cancelling the park for reasons other than the run's end: the change is neither parked nor
    applied, and its message is retried."""


def _pk(integration_id: str) -> dict[str, str]:
    return {"S": f"PARKED#{integration_id}"}


def run_has_ended(error_response: dict[str, Any]) -> bool | None:
    """Reads a TransactionCanceledException of the park: True when the lock's condition failed (the run no
    longer holds the lock), False when the cancellation had another cause (a conflict, throttling, a condition
    on another item: try again), None when DynamoDB gave no reasons (unknown: try again, then give up)."""
    reasons: Sequence[dict[str, Any]] = error_response.get("CancellationReasons") or []
    if not reasons:
        return None
    lock = reasons[LOCK_ITEM] if len(reasons) > LOCK_ITEM else {}
    return lock.get("Code") == "ConditionalCheckFailed"


class ParkingLot:
    def __init__(self, table_name: str, runs: RunStore | None = None) -> None:
        self._table = table_name
        self._runs = runs or RunStore(table_name)

    def active_run(self, integration_id: str) -> str | None:
        """The run id whose full sync holds the integration now, or None: real-time changes apply at once
        (also during a dry run, which writes nothing and so has nothing a change could race with)."""
        lock = self._runs.lock(integration_id)
        return lock.run_id if lock is not None and lock.held and not lock.dry_run else None

    def park(self, integration_id: str, person_key: int, run_id: str, *, deleted: bool = False) -> bool:
        """Park one change while `run_id` still holds the lock. False when the run ended meanwhile.

        Deletes are counted on the run (`parked_deletes`): each one shifts Efficy's numbered pages, which the
        run's Seams step makes up for (see seams.py). Raises ParkingContended when DynamoDB keeps cancelling the
        park for another reason (module docstring)."""
        ddb = client("dynamodb")
        last = ""
        for attempt in range(PARK_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, PARK_BACKOFF * 2**attempt))
            try:
                self._park_once(ddb, integration_id, person_key, run_id, deleted)
            except ddb.exceptions.TransactionCanceledException as exc:
                ended = run_has_ended(exc.response)
                if ended:
                    return False
                codes = [str(r.get("Code")) for r in exc.response.get("CancellationReasons") or []]
                last = ", ".join(codes) or "no reasons given"
                continue
            return True
        raise ParkingContended(f"parking of a change for run {run_id} kept being cancelled ({last}); retry later")

    def _park_once(self, ddb: Any, integration_id: str, person_key: int, run_id: str, deleted: bool) -> None:
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        ddb.transact_write_items(
            TransactItems=[
                self._runs.lock_condition(integration_id, run_id),
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"pk": _pk(integration_id), "sk": {"S": str(int(person_key))}},
                        "UpdateExpression": "SET parked_at = :now, run_id = :rid ADD changes :one",
                        "ExpressionAttributeValues": {
                            ":now": {"S": now},
                            ":rid": {"S": run_id},
                            ":one": {"N": "1"},
                        },
                    }
                },
                self._runs.counter_update(
                    integration_id, run_id, {"parked_messages": 1, **({"parked_deletes": 1} if deleted else {})}
                ),
            ]
        )

    def _items(self, integration_id: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _pk(integration_id)},
            "ConsistentRead": True,
        }
        if limit:
            params["Limit"] = limit
        ddb = client("dynamodb")
        while True:
            page = ddb.query(**params)
            yield from page.get("Items", [])
            if limit or "LastEvaluatedKey" not in page:
                return
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def count(self, integration_id: str) -> int:
        """Persons waiting (not messages: ten changes of one person park once)."""
        ddb = client("dynamodb")
        params: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _pk(integration_id)},
            "Select": "COUNT",
            "ConsistentRead": True,
        }
        total = 0
        while True:
            page = ddb.query(**params)
            total += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                return total
            params["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def has_parked(self, integration_id: str) -> bool:
        return next(self._items(integration_id, limit=1), None) is not None

    def drain(self, integration_id: str, queue_url: str, *, chunk: int = 500) -> int:
        """Put every parked key back on the queue as a "parked" Resync change, then forget it. Returns the count.

        A key parked again after it was read (a new run started) keeps its item: the delete is conditional on
        the park time that was read, and the re-enqueued change is parked again by the worker anyway.
        """
        total = 0
        batch: list[dict[str, Any]] = []
        for item in self._items(integration_id):
            batch.append(item)
            if len(batch) >= chunk:
                total += self._requeue(integration_id, queue_url, batch)
                batch = []
        if batch:
            total += self._requeue(integration_id, queue_url, batch)
        return total

    def _requeue(self, integration_id: str, queue_url: str, items: list[dict[str, Any]]) -> int:
        now = time.time()
        changes = [
            ContactChange(
                integration_id=integration_id,
                person_key=int(item["sk"]["S"]),
                operation="Resync",
                date=item.get("parked_at", {}).get("S", ""),
                source="parked",
                received_at=now,
            )
            for item in items
        ]
        enqueue_changes(queue_url, changes)
        ddb = client("dynamodb")
        for item in items:
            try:
                ddb.delete_item(
                    TableName=self._table,
                    Key={"pk": item["pk"], "sk": item["sk"]},
                    ConditionExpression="parked_at = :seen",
                    ExpressionAttributeValues={":seen": item.get("parked_at", {"S": ""})},
                )
            except ddb.exceptions.ConditionalCheckFailedException:
                continue  # parked again by a newer run: it stays for that run
        return len(changes)
