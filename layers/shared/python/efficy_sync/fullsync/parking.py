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

The items and the transaction live in store/parking.py; this module decides (when a change parks, when an attempt
is worth repeating, what the drain sends back).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ..changes import ContactChange
from ..queue import enqueue_changes
from ..store.parking import LOCK_ITEM as LOCK_ITEM
from ..store.parking import Parked, ParkedKeys
from ..store.parking import run_has_ended as run_has_ended
from ..store.protocols import Parking, Runs
from ..store.runs import RunStore

#: attempts at one park when DynamoDB cancels it for a reason other than the run's end
PARK_ATTEMPTS = 6
PARK_BACKOFF = 0.05  # seconds, doubled per attempt, full jitter


class ParkingContended(Exception):
    """DynamoDB kept cancelling the park for reasons other than the run's end: the change is neither parked nor
    applied, and its message is retried."""


class ParkingLot:
    def __init__(self, table_name: str, runs: Runs | None = None, parked: Parking | None = None) -> None:
        self._runs: Runs = runs or RunStore(table_name)
        self._parked: Parking = parked or ParkedKeys(table_name)

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
        last = ""
        for attempt in range(PARK_ATTEMPTS):
            if attempt:
                time.sleep(random.uniform(0, PARK_BACKOFF * 2**attempt))
            answer = self._parked.try_park(integration_id, person_key, run_id, deleted=deleted)
            if isinstance(answer, bool):
                return answer
            last = answer
        raise ParkingContended(f"parking of a change for run {run_id} kept being cancelled ({last}); retry later")

    def _items(self, integration_id: str, limit: int | None = None) -> list[Parked]:
        return list(self._parked.items(integration_id, limit))

    def count(self, integration_id: str) -> int:
        """Persons waiting (not messages: ten changes of one person park once)."""
        return self._parked.count(integration_id)

    def has_parked(self, integration_id: str) -> bool:
        return bool(self._items(integration_id, limit=1))

    def drain(
        self, integration_id: str, queue_url: str, *, chunk: int = 500, on_sent: Callable[[int], None] | None = None
    ) -> int:
        """Put every parked key back on the queue as a "parked" Resync change, then forget it. Returns the count.

        A key parked again after it was read (a new run started) keeps its item: the delete is conditional on
        the park time that was read, and the re-enqueued change is parked again by the worker anyway.
        `on_sent(n)` is told of each chunk once it is on the queue and forgotten: a later chunk that SQS refuses
        raises, and the count returned at the end would lose the persons the chunks before it did re-send.
        """
        total = 0
        batch: list[Parked] = []
        for item in self._parked.items(integration_id):
            batch.append(item)
            if len(batch) >= chunk:
                total += self._sent(self._requeue(integration_id, queue_url, batch), on_sent)
                batch = []
        if batch:
            total += self._sent(self._requeue(integration_id, queue_url, batch), on_sent)
        return total

    @staticmethod
    def _sent(n: int, on_sent: Callable[[int], None] | None) -> int:
        if on_sent is not None and n:
            on_sent(n)
        return n

    def _requeue(self, integration_id: str, queue_url: str, items: list[Parked]) -> int:
        now = time.time()
        changes = [
            ContactChange(
                integration_id=integration_id,
                person_key=item.person_key,
                operation="Resync",
                date=item.parked_at,
                source="parked",
                received_at=now,
            )
            for item in items
        ]
        enqueue_changes(queue_url, changes)
        for item in items:
            self._parked.forget(integration_id, item)  # False: parked again by a newer run, it stays for that run
        return len(changes)
