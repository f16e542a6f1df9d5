"""Real-time worker: a batch of contact changes from SQS, applied to APSIS One.

The persons of a batch are refetched from Efficy together (one JSON-RPC call with one context per person)
and their stored states read together (one BatchGetItem), then each person is synced. Several messages
for one person in a batch are applied once: the refetch already holds the newest data. A person whose state
write a newer sync refused (RacedWrite) is read and synced again at once.

While an integration runs a full sync its changes are parked instead (fullsync/parking.py): nothing is
fetched, the key is remembered and the message acknowledged; the run re-enqueues the keys when it ends.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .changes import ContactChange
from .clients.errors import EfficyBusinessError, EfficyInconclusive, RacedWrite
from .config import IntegrationConfig
from .fullsync.parking import ParkingLot
from .mapping import needed_fields as needed_fields  # its home is mapping; kept importable from here
from .observability import count
from .state import PersonState
from .store.protocols import PersonStates
from .sync import Outcome, PersonSyncer


@dataclass
class IntegrationPart:
    """What one integration's part of a batch needs, fetched once; `error` fails all its messages."""

    cfg: IntegrationConfig | None = None
    syncer: PersonSyncer | None = None
    persons: dict[int, dict[str, Any]] = field(default_factory=dict)
    states: dict[int, PersonState] = field(default_factory=dict)
    done: dict[int, Outcome] = field(default_factory=dict)
    error: Exception | None = None
    parked_run: str | None = None  # the full sync this integration's changes are parked for
    loaded: set[int] = field(default_factory=set)  # keys fetched (a deleted person is fetched but absent)


class Batch:
    """One invocation's prefetched data (an IntegrationPart per integration): kept per call, so concurrent
    invocations never share it."""

    def __init__(self, parts: dict[str, IntegrationPart], worker: BatchWorker | None = None) -> None:
        self._parts = parts
        self._worker = worker

    def apply(self, change: ContactChange) -> Outcome:
        """Raises for transient failures (the message is retried); returns the outcome otherwise."""
        part = self._parts.get(change.integration_id)
        if part is None:
            raise RuntimeError(f"integration {change.integration_id} was not prefetched")
        if part.error is not None:
            raise part.error
        if change.person_key in part.done:  # a second message for the same person in this batch
            earlier = part.done[change.person_key]
            if earlier.result == "parked" and change.operation == "Delete" and part.parked_run:
                # parked as an update first: the run counts parked deletes to size its Seams step
                assert self._worker is not None and self._worker.parking is not None
                self._worker.parking.park(change.integration_id, change.person_key, part.parked_run, deleted=True)
            return earlier
        if part.parked_run:
            assert self._worker is not None and self._worker.parking is not None
            deleted = change.operation == "Delete"
            if self._worker.parking.park(change.integration_id, change.person_key, part.parked_run, deleted=deleted):
                part.done[change.person_key] = Outcome(change.person_key, "parked")
                return part.done[change.person_key]
            # the run ended since the batch started (its drain has passed): apply the change now
            part.parked_run = None
        if change.person_key not in part.loaded:
            assert self._worker is not None
            self._worker.load(change.integration_id, part, [change.person_key])
        assert part.syncer is not None
        key = change.person_key
        try:
            outcome = part.syncer.sync(key, part.persons.get(key), part.states.get(key))
        except RacedWrite:
            # a newer sync (the opt-out write-back, another message) stored the person while this read's calls
            # went out: APSIS may now hold its opt-in over an unsubscribe. Synced again at once from a fresh
            # read, not after the queue's retry delay (30 s or more of mailing a person who opted out); a second
            # race in a row is left to that retry
            assert self._worker is not None
            count("RacedSyncsRepeated")
            self._worker.load(change.integration_id, part, [key], fresh=True)
            outcome = part.syncer.sync(key, part.persons.get(key), part.states.get(key))
        part.done[key] = outcome
        return outcome


class BatchWorker:
    def __init__(
        self,
        get_config: Callable[[str], IntegrationConfig],
        build_syncer: Callable[[IntegrationConfig], PersonSyncer],
        get_persons: Callable[[IntegrationConfig, list[int], list[str]], dict[int, dict[str, Any]]],
        states: PersonStates,
        parking: ParkingLot | None = None,
    ) -> None:
        self._get_config = get_config
        self._build_syncer = build_syncer
        self._get_persons = get_persons
        self._states = states
        self.parking = parking

    def prefetch(self, changes: list[ContactChange]) -> Batch:
        by_integration: dict[str, set[int]] = defaultdict(set)
        for change in changes:
            by_integration[change.integration_id].add(change.person_key)
        parts: dict[str, IntegrationPart] = {}
        for integration_id, keys in by_integration.items():
            part = IntegrationPart()
            parts[integration_id] = part
            try:
                if self.parking is not None:
                    part.parked_run = self.parking.active_run(integration_id)
                    if part.parked_run:
                        continue  # a full sync runs: park, fetch nothing
                self.load(integration_id, part, sorted(keys))
            except (EfficyBusinessError, EfficyInconclusive) as exc:
                # an answer about one of the persons (a record Efficy refuses, a not-found it cannot confirm)
                # fails the read of all: each message then reads its own person (Batch.apply), so only that
                # person's message is retried and dead-lettered, not its batch-mates'
                if len(keys) == 1 or part.syncer is None:
                    part.error = exc
            except Exception as exc:  # every message of this integration fails and is retried
                part.error = exc
        return Batch(parts, self)

    def load(self, integration_id: str, part: IntegrationPart, keys: list[int], *, fresh: bool = False) -> None:
        """Config, syncer, current persons and stored states for `keys` (added to what `part` holds). `fresh`:
        what `part` held for them is dropped first (a person deleted since, or never stored, is absent)."""
        if part.cfg is None or part.syncer is None:
            part.cfg = self._get_config(integration_id)
            part.syncer = self._build_syncer(part.cfg)
        if fresh:
            for key in keys:
                part.persons.pop(key, None)
                part.states.pop(key, None)
        part.persons.update(self._get_persons(part.cfg, keys, needed_fields(part.cfg)))
        part.states.update(self._states.get_many(integration_id, keys))
        part.loaded.update(keys)
