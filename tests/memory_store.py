"""The in-memory person-state store the tests use in place of DynamoDB (issue 12: it is not shipped).

It keeps the contract of `efficy_sync.store.persons.PersonStateStore` (typed against the `PersonStates`
Protocol, so the type checker holds both to the same methods) and reads through the same consent policy
(`with_optouts` -> `consent.merge_optouts`), so a test on it exercises production's merge, not a copy.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from efficy_sync.consent import OptOutRecord, future_limit, normalise_stamp, read_order
from efficy_sync.state import PersonState, health_issue, utc_now
from efficy_sync.store.person_items import ConflictingWrite, HealthKind, StaleWrite, state_document
from efficy_sync.store.persons import _order, with_optouts

if TYPE_CHECKING:
    from efficy_sync.store.protocols import PersonStates


class MemoryPersonStateStore:
    """The same contract as PersonStateStore (the PersonStates Protocol), in memory: for property tests of the
    consent rules under interleavings. Each call is atomic, as a DynamoDB item write is; the same contract tests
    run against both stores (tests/integration/test_optout_store.py)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[tuple[str, int], tuple[str, int]] = {}  # (JSON, revision): callers never share objects
        self._optouts: dict[tuple[str, int], dict[str, tuple[OptOutRecord, str | None]]] = {}

    def get(self, integration_id: str, person_key: int | str) -> PersonState | None:
        return self.get_many(integration_id, [person_key]).get(int(person_key))

    def get_many(self, integration_id: str, keys: Iterable[int | str]) -> dict[int, PersonState]:
        out: dict[int, PersonState] = {}
        with self._lock:
            for person_key in dict.fromkeys(int(k) for k in keys):
                stored = self._states.get((integration_id, person_key))
                state = None
                if stored is not None:
                    state = PersonState.model_validate_json(stored[0]).model_copy(update={"revision": stored[1]})
                slots = self._optouts.get((integration_id, person_key), {})
                live = {slot: rec for slot, (rec, retired) in slots.items() if not retired}
                merged = with_optouts(state, integration_id, person_key, live)
                if merged is not None:
                    out[person_key] = merged
        return out

    def announce(self, state: PersonState) -> None:
        self.put(state)

    def withdraw(self, state: PersonState) -> None:
        key = (state.integration_id, int(state.person_key))
        with self._lock:
            stored = self._states.get(key)
            if stored is None or stored[1] != state.revision:
                raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read")
            del self._states[key]

    def put(self, state: PersonState) -> None:
        key = (state.integration_id, int(state.person_key))
        stamp = normalise_stamp(state.change_stamp or "")
        with self._lock:
            stored = self._states.get(key)
            if stored is not None:
                previous = PersonState.model_validate_json(stored[0])
                stored_stamp = normalise_stamp(previous.change_stamp or "")
                # PersonStateStore.put's condition
                order = read_order(state.asked_at, state.answered_at, previous.asked_at, previous.answered_at)
                if order < 0 if order is not None else future_limit() >= stored_stamp > stamp:
                    raise StaleWrite(f"person {state.person_key}: stored state is newer than {stamp}")
                if stored[1] != state.revision:
                    raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read")
            elif state.revision:
                raise ConflictingWrite(f"person {state.person_key}: stored state changed since it was read")
            self._states[key] = (state_document(state), state.revision + 1)

    def announce_many(self, states: list[PersonState]) -> list[PersonState]:
        """PersonStateStore.announce_many: put_batch's writes (a subclass counting put_batch does not count these)."""
        return MemoryPersonStateStore.put_batch(self, states)

    def put_batch(self, states: list[PersonState], *, workers: int = 4) -> list[PersonState]:
        """PersonStateStore.put_batch: unconditional where the stored revision is still the one read."""
        refused = []
        for state in states:
            key = (state.integration_id, int(state.person_key))
            with self._lock:
                stored = self._states.get(key)
                if (stored[1] if stored else 0) == state.revision:
                    self._states[key] = (state_document(state), state.revision + 1)
                    continue
            try:
                self.put(state)
            except StaleWrite:
                refused.append(state)
        return refused

    def record_optout(self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord) -> bool:
        with self._lock:
            slots = self._optouts.setdefault((integration_id, int(person_key)), {})
            current = slots.get(slot)
            if current is not None and not _order(current[0].at) < _order(record.at):
                return False
            slots[slot] = (record, None)
            return True

    def update_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool:
        return self._replace(integration_id, person_key, slot, record, expected_at, None, live_only=True)

    def retire_optout(
        self, integration_id: str, person_key: int | str, slot: str, record: OptOutRecord, *, expected_at: str
    ) -> bool:
        return self._replace(integration_id, person_key, slot, record, expected_at, utc_now(), live_only=False)

    def _replace(
        self,
        integration_id: str,
        person_key: int | str,
        slot: str,
        record: OptOutRecord,
        expected_at: str,
        retired_at: str | None,
        *,
        live_only: bool,
    ) -> bool:
        with self._lock:
            slots = self._optouts.get((integration_id, int(person_key)), {})
            current = slots.get(slot)
            if current is None or _order(current[0].at) != _order(expected_at) or (live_only and current[1]):
                return False
            slots[slot] = (record, retired_at)
            return True

    def issues(self, integration_id: str, kinds: Iterable[HealthKind] = ("failure",)) -> list[PersonState]:
        wanted = set(kinds)
        return [s for s in self.scan(integration_id) if (issue := health_issue(s)) is not None and issue[0] in wanted]

    def reindex(self, integration_id: str) -> int:
        return 0  # `issues` reads the states themselves: nothing to index

    def scan(self, integration_id: str) -> list[PersonState]:
        with self._lock:
            keys = sorted(k for i, k in self._states if i == integration_id)
        return list(self.get_many(integration_id, keys).values())

    def keys_in_apsis(self, integration_id: str) -> Iterator[int]:
        return (int(s.person_key) for s in self.scan(integration_id) if s.exists_in_apsis)


if TYPE_CHECKING:  # held to the Protocol by the type checker (make lint), never run
    _conforms: PersonStates = MemoryPersonStateStore()
