"""The person states a full-sync page decides, written in batches instead of one conditional PutItem each.

A page syncs its persons a chunk at a time (page.py). Each person's PersonSyncer ends with `states.put(state)`,
one conditional PutItem per person that changed or was skipped for the first time: on a first load, a write
per person, the slowest part of a page after the APSIS calls. `BatchedStates` stands in for the page's
PersonStateStore: `put` only remembers the state, and once the chunk is done `flush` writes them all with
`PersonStateStore.put_batch` (TransactWriteItems of up to 50 puts, each conditional on its revision, a few at
once).

Why no concurrent writer is overwritten (the argument of store/batch_writes.py, applied to a page):
- the real-time worker parks every change of the integration while a full sync runs (fullsync/parking.py), so
  it writes no person state until the run ends; once a page sees its run end (a cancel releases the lock and
  re-sends the parked changes while chunks may still be syncing), the chunks it writes from then on take the
  conditional put, person by person (`run_ended`);
- the pages hold disjoint persons; a person a delete in Efficy moved to the next page is read by both from the
  same Efficy record, and the stored revision check below sends the later write to the conditional path;
- the opt-out write-back may write a STATE item, but an opt-out itself is never in that item: it is recorded
  first in the person's OPTOUTS item (conditional, per slot) and merged back into every read, so a batched
  STATE landing on top of the write-back's cannot lose it (at worst the next sync compares the person again);
- `put_batch`'s every put requires the stored revision to be the one its state was read at, in the write
  itself (so a real-time state stored in the moment before it is never overwritten); a group with a changed
  one writes nothing and its states take the conditional put. A state refused there (StaleWrite,
  ConflictingWrite) is not lost: the person is synced again through the plain store, exactly what the
  per-person put's ConflictingWrite did (plan again against the stored state; StaleWrite keeps its reconcile-and-retry).
Write-aheads (sync.py: an opt-in's slot stored as unknown, and the profile as maybe there, before the opt-in is
sent) cannot wait for the batch: the batch is written after the chunk's APSIS calls, so if it fails, the page's
retry must still know an opt-in may be in APSIS. `chunk_write_aheads` plans them for the chunk right after its
read, and `announce_chunk` stores them in one request (about one more transaction per chunk of a first load);
each person's own announce then finds it stored and writes nothing.
The opt-out record updates a sync makes after its put (`update_optout`, `retire_optout`: a confirmed or a
retired opt-out) are held back too and made only once the person's state is written, in the same order as
before; a person whose state was refused gets none of them (their second sync decides again).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..config import IntegrationConfig
from ..mapping import Skip, map_person
from ..person_plan import plan_operations
from ..state import UNKNOWN, PersonState
from ..state_updates import announced_state
from ..store.person_items import StaleWrite
from ..store.protocols import PersonStates


class BatchedStates:
    """A PersonStateStore whose `put` waits for `flush`; every other call goes straight to `store`."""

    def __init__(self, store: PersonStates) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._pending: dict[int, PersonState] = {}
        self._optouts: dict[int, list[Callable[[], Any]]] = {}
        self._writing: dict[int, PersonState] = {}  # taken, being written
        #: the run ended (a cancel) while this page synced: real-time changes apply again, so the parked-worker
        #: argument above no longer holds and every state takes the conditional put
        self._run_ended = False
        #: states written by flush and put_batch calls, for tests and benchmarks
        self.batched = 0
        #: write-aheads announce_chunk stored, at their stored revision, until the person's sync announces
        self._announced: dict[int, PersonState] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def run_ended(self) -> None:
        """The page saw its run end: the chunks still syncing are written with conditions (see `write`)."""
        self._run_ended = True

    # ---- writes held until flush --------------------------------------------------------------------------
    def put(self, state: PersonState) -> None:
        with self._lock:
            self._pending[int(state.person_key)] = state

    def announce(self, state: PersonState) -> None:
        """A write-ahead (sync.py) is stored at once: it must be durable before the APSIS calls go out. One the
        chunk's own (`announce_chunk`) already stored, from the same revision, is not written again."""
        with self._lock:
            ahead = self._announced.pop(int(state.person_key), None)
        if ahead is None or ahead.revision != state.revision + 1 or not _covers(ahead, state):
            self._store.put(state)

    def announce_chunk(self, aheads: list[PersonState]) -> None:
        """The write-aheads of a chunk's persons about to be opted in (`chunk_write_aheads`), stored in one request
        before their syncs start, each conditional on the revision read. Without them a page wrote its states
        only after the chunk's APSIS calls: when that write failed (DynamoDB throttled past the SDK's retries) the
        retried page read "never opted in", and with the CRM having taken a person out of the profile meanwhile,
        APSIS kept the opt-in for good. One refused here is written by the person's own sync (and refused
        there: planned again)."""
        if not aheads:
            return
        refused = {s.person_key for s in self._store.announce_many(aheads)}
        with self._lock:
            for ahead in aheads:
                if ahead.person_key not in refused:
                    self._announced[int(ahead.person_key)] = ahead.model_copy(update={"revision": ahead.revision + 1})

    def withdraw(self, state: PersonState) -> None:
        self._store.withdraw(state)

    def update_optout(self, integration_id: str, person_key: int | str, *args: Any, **kwargs: Any) -> bool:
        return self._hold(int(person_key), self._store.update_optout, integration_id, person_key, *args, **kwargs)

    def retire_optout(self, integration_id: str, person_key: int | str, *args: Any, **kwargs: Any) -> bool:
        return self._hold(int(person_key), self._store.retire_optout, integration_id, person_key, *args, **kwargs)

    def _hold(self, key: int, call: Callable[..., bool], *args: Any, **kwargs: Any) -> bool:
        """The sync ignores the answer (a newer opt-out kept is the point of the condition): True here."""
        with self._lock:
            self._optouts.setdefault(key, []).append(lambda: call(*args, **kwargs))
        return True

    # ---- reads see what the page decided -----------------------------------------------------------------
    def get(self, integration_id: str, person_key: int | str) -> PersonState | None:
        return self.get_many(integration_id, [person_key]).get(int(person_key))

    def get_many(self, integration_id: str, keys: Iterable[int | str]) -> dict[int, PersonState]:
        """Stored states, with the states this page decided but has not written yet in their place (the
        e-mail conflict check reads other persons' states: it must see a profile this chunk just created)."""
        wanted = [int(k) for k in keys]
        with self._lock:
            pending = {k: d for k in wanted if (d := self._pending.get(k) or self._writing.get(k)) is not None}
        found = (
            self._store.get_many(integration_id, [k for k in wanted if k not in pending])
            if len(pending) < len(wanted)
            else {}
        )
        return {**found, **pending}

    # ---- the batch --------------------------------------------------------------------------------------
    def take(self, keys: Iterable[int] | None = None) -> Held:
        """The held writes (of `keys` only, when given: the next chunk, already syncing, keeps its own), handed
        to `write` while the page goes on; until written they still read as decided."""
        with self._lock:
            if keys is None:
                held = Held(self._pending, self._optouts)
                self._pending, self._optouts = {}, {}
            else:
                wanted = set(keys)
                held = Held(
                    {k: self._pending.pop(k) for k in wanted if k in self._pending},
                    {k: self._optouts.pop(k) for k in wanted if k in self._optouts},
                )
            self._writing.update(held.states)
        return held

    def write(self, held: Held) -> set[int]:
        """Writes `held`'s states in batches, then its opt-out updates of the persons written. Returns the keys
        whose state was refused (changed since read, or a newer change stored: put_batch's conditional path,
        StaleWrite and ConflictingWrite alike): the caller syncs them again through the store."""
        try:
            states = list(held.states.values())
            if self._run_ended:
                refused = self._put_each(states)
            else:
                refused = {int(s.person_key) for s in self._store.put_batch(states)} if states else set()
        finally:
            with self._lock:
                for key in held.states:
                    self._writing.pop(key, None)
        self.batched += len(held.states) - len(refused)
        for key, calls in held.optouts.items():
            if key in refused:
                continue  # planned again by the caller's second sync, opt-out records included
            for call in calls:
                call()
        return refused

    def _put_each(self, states: list[PersonState]) -> set[int]:
        refused: set[int] = set()
        for state in states:
            try:
                self._store.put(state)
            except StaleWrite:  # ConflictingWrite too: the caller syncs the person again
                refused.add(int(state.person_key))
        return refused

    def flush(self) -> set[int]:
        """`write(take())`: the held writes now."""
        return self.write(self.take())


@dataclass
class Held:
    """Writes a page's chunk decided: states by person key, opt-out record updates to make after them."""

    states: dict[int, PersonState] = field(default_factory=dict)
    optouts: dict[int, list[Callable[[], Any]]] = field(default_factory=dict)


def _covers(ahead: PersonState, state: PersonState) -> bool:
    """Whether the stored write-ahead says at least what `state` would: the profile maybe there, and every slot
    `state` marks unknown unknown too (a chunk's plan may have had more opt-ins than the sync sends)."""
    slots = [slot for slot, value in state.consents.items() if value == UNKNOWN]
    return (ahead.exists_in_apsis or not state.exists_in_apsis) and all(ahead.consents.get(s) == UNKNOWN for s in slots)


def chunk_write_aheads(
    cfg: IntegrationConfig,
    persons: list[dict[str, Any]],
    stored: dict[int, PersonState],
    query_tags: Callable[[int], set[str]] | None,
    now: str,
) -> list[PersonState]:
    """The write-aheads (state_updates.announced_state) the chunk's syncs will need, from the same plan they make
    (map_person, plan_operations against the state just read): every person about to be sent an opt-in. A
    person whose record the sync will refuse or fail on is left to that sync."""
    aheads = []
    for person in persons:
        key = int(person["K_CONTACT"])
        if any(c.field not in person for c in cfg.sync_conditions):
            continue  # refused by the sync (_check_readable): nothing is sent
        try:
            result = map_person(cfg, person, query_tags=query_tags(key) if query_tags is not None else None)
            if isinstance(result, Skip):
                continue
            ahead = announced_state(
                stored.get(key), cfg.integration_id, key, plan_operations(result, stored.get(key)), now
            )
        except Exception:  # noqa: S112 - the person's own sync meets it again, and reports it
            continue
        if ahead is not None:
            aheads.append(ahead)
    return aheads
