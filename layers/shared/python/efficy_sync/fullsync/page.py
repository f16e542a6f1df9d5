"""One page of a full sync: fetch its persons from Efficy (mapped fields only), bring each one in line in APSIS.

Each person goes through the same `PersonSyncer` real-time sync uses (conditions, consent safety, diff against
what was last pushed, stamp-guarded state), so an unchanged person costs no APSIS call and a page read before
a newer real-time change can never overwrite it. Writes are paced: APSIS allows 100 requests/s per account, and
the pages and real-time workers of an integration share one budget (budget.py), so a page of unchanged persons
leaves its capacity to the others and none of them collects 429s.
In import mode the keys of the persons whose changes an import can carry are queued for the Imports step
(collect.py), which sends them in files gathered across pages; without a queue (tests, tools) the page
imports them itself.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from ..budget import ACCOUNT_SHARE, PacedApsis, account_rate
from ..clients.errors import EfficyBusinessError, EfficyInconclusive
from ..clients.http import map_in_context
from ..config import IntegrationConfig
from ..mapping import needed_fields
from ..observability import logger
from ..safety import RemovalGate, base_counts, removal_counts
from ..state import PersonState, utc_now
from ..store.protocols import PersonStates
from ..sync import Outcome, PersonSyncer, reconcile_sent
from .import_writer import ImportWriter
from .page_states import BatchedStates, chunk_write_aheads
from .plan import MAX_TAIL_EXTENSION, checked_pages, one_record_each
from .report import skip_label, tally

if TYPE_CHECKING:
    from ..clients.apsis import ApsisClient  # PacedApsis stands in for it (follow-up: an APSIS Protocol)

#: persons of a page synced at once: each waits on APSIS round trips, and the shared budget, not this, bounds
#: the request rate; one person's calls stay sequential, within APSIS's 10 requests/s per profile key
PERSON_THREADS = 16
#: persons whose states are re-read together (one consistent BatchGetItem) right before they are synced
CHUNK = 48
#: a page asks whether its run still runs (a cancel) before a chunk at most this often: a cancel stops it within
#: seconds, and a page of unchanged persons (chunks of milliseconds) does not read the run record per chunk
STOP_CHECK_SECONDS = 2.0
#: chunks read and syncing beyond the oldest unfinished one: the next chunk's persons start as soon as threads
#: free up, instead of every chunk waiting for its slowest person (a read then precedes its opt-ins by the
#: length of two chunks, seconds: the argument of _sync_batch holds)
CHUNKS_AHEAD = 1


class Pace:
    """At most `rate` calls per second from this worker (a token bucket with a one-call burst)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)


def worker_rate(max_concurrency: int) -> float:
    """A fixed in-process share of the account per worker: the pace of callers without the shared budget."""
    return account_rate() * ACCOUNT_SHARE / max(1, max_concurrency)


@dataclass
class PageResult:
    page: int
    persons: int = 0
    efficy_pages: int = 0
    counters: Counter[str] = field(default_factory=Counter)
    stopped: bool = False

    def summary(self) -> dict[str, Any]:
        c = self.counters
        return {
            "page": self.page,
            "persons": self.persons,
            "synced": c["created"] + c["updated"] + c["unchanged"],
            "skipped": c["skipped"],
            "failed": c["failed"],
            # persons the export listed twice with different values (plan.one_record_each): left as they are
            "conflicting": c["export_conflicting"],
            "stopped": self.stopped,
        }


def efficy_pages(efficy: Any, descriptor: dict[str, Any], fields: list[str]) -> Iterator[list[dict[str, Any]]]:
    """The descriptor's Efficy pages, one at a time (memory stays one page); the tail goes on to the end.

    An empty or short answer is the end only when nothing follows it. Efficy's export can answer short once (a
    proxy, a read cut off), and taken as the end it silently skipped the rest of the page's persons: their CRM
    opt-outs never reached APSIS One and the run still succeeded. So the page after it is probed (one tiny read);
    when persons follow, the page is read again: whole now, it goes on; still short, the connector caps its page
    size (a clear error, _capped); still empty, the answers are inconclusive (retried, then the page fails)."""
    first, count, size = int(descriptor["first"]), int(descriptor["pages"]), int(descriptor["page_size"])
    last = first + count + (MAX_TAIL_EXTENSION if descriptor.get("tail") else 0)
    number = first
    while number < last:
        records = efficy.list_persons_page(number, size, fields, include_profiles=True)
        if len(records) < size:
            records, end = _settle_short(efficy, number, size, records, fields)
            if end:
                if records:
                    yield records
                return
        yield records
        number += 1
    if descriptor.get("tail") and _record_at(efficy, number * size):
        # more persons than the plan counted, beyond what the tail reads on: a loud failure, not a quiet success
        raise EfficyBusinessError(
            f"Efficy still has persons after page {number - 1}, {MAX_TAIL_EXTENSION} pages past the plan's count: "
            "the count was short or the CRM grew during the run; run the full sync again",
            code="MORE_THAN_PLANNED",
        )


#: reads of a short page before it is judged (a page that answers more each time is growing, not capped)
MAX_SHORT_READS = 3


def _settle_short(
    efficy: Any, number: int, size: int, records: list[dict[str, Any]], fields: list[str]
) -> tuple[list[dict[str, Any]], bool]:
    """(records, True) when a short page is the end of the data; (the whole page, False) when a re-read filled
    it. Probed right after the last record answered, not at the next requested page: a connector capping its page
    size on a CRM that fits one requested page had nothing there, and the persons past the cap were never synced
    while the run succeeded. The same short count again with persons after it is a cap (PAGE_SIZE_CAPPED); more
    than before is persons created meanwhile (a user, an import), probed again, never taken for a cap."""
    for _ in range(MAX_SHORT_READS):
        if not _record_at(efficy, number * size + len(records)):
            return records, True
        again = efficy.list_persons_page(number, size, fields, include_profiles=True)
        if not again:
            raise EfficyInconclusive(f"Efficy answered page {number} empty, and persons after it")
        if len(again) >= size:
            return again, False
        if len(again) <= len(records):
            raise _capped(number, size, min(len(records), len(again)) or len(again))
        records = again
    raise EfficyInconclusive(f"Efficy's page {number} answered more persons at each of {MAX_SHORT_READS} reads")


def _record_at(efficy: Any, index: int) -> bool:
    """Whether a person sits at record `index` (from 0, in the export's order): a one-record read."""
    return bool(efficy.list_persons_page(index, 1, ["K_CONTACT"], include_profiles=False))


def _capped(number: int, size: int, answered: int) -> EfficyBusinessError:
    """A page answered short twice with persons after it: the connector answers fewer than it is asked for, so
    every later page would read another range than we think and persons would be skipped without a word."""
    return EfficyBusinessError(
        f"Efficy answered {answered} persons for page {number} of {size} and more after it: the connector caps "
        f"its page size; set efficy.page_size to {answered} or less",
        code="PAGE_SIZE_CAPPED",
    )


def sync_page(
    cfg: IntegrationConfig,
    descriptor: dict[str, Any],
    *,
    efficy: Any,
    apsis: Any,
    states: PersonStates,
    dry_run: bool,
    write_mode: str = "diff",
    max_concurrency: int = 5,
    should_continue: Callable[[], bool] = lambda: True,
    threads: int = PERSON_THREADS,
    removal_gate: RemovalGate | None = None,
    queue: Callable[[int, int, list[int]], None] | None = None,
    query_tags: Callable[[int], set[str]] | None = None,
    counted: Collection[int] = (),
    skip: Collection[int] = (),
) -> PageResult:
    """Sync every person of one page descriptor. Retryable API errors propagate (the state machine retries
    the page; persons already done cost nothing the second time); others are counted as failed persons.
    `removal_gate`: the blast-radius breaker (safety.py); the removals are counted (rm:*) against what the
    page's persons held before (base:*) whether or not they were sent. `query_tags`: a person's planned query
    tags (query_plan.py), sent with the person's own tag call; None leaves query tags to the Tags step.
    `counted`: persons whose removals this run's pages already held and counted (a seam window reads some of them
    again: counted twice, a run within the threshold HALTED). `skip`: persons another step writes (a seam window
    of an import-mode run leaves the persons the pages queued to their import)."""
    # the Lambda's client is paced by the account's shared budget (budget.paced); others by a fixed share of it
    paced = apsis if isinstance(apsis, PacedApsis) else PacedApsis(apsis, Pace(worker_rate(max_concurrency)))
    # states are written a chunk at a time (page_states.py says why it is safe); a dry run keeps the plain store
    batched = None if dry_run else BatchedStates(states)

    def syncer_for(store: Any) -> PersonSyncer:
        return PersonSyncer(
            cfg,
            cast("ApsisClient", paced),
            store,
            dry_run=dry_run,
            email_lookup=efficy.find_contacts_by_email,
            removal_gate=removal_gate,
        )

    syncer = syncer_for(batched or states)
    plain = syncer_for(states) if batched is not None else syncer
    importer = None
    if write_mode == "import" and not dry_run:
        importer = ImportWriter(cfg, paced, states, hold_removals=removal_gate is not None)
    result = PageResult(page=int(descriptor["page"]))
    fields = needed_fields(cfg)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="page") as pool:
        for records in checked_pages(efficy_pages(efficy, descriptor, fields), result.counters, result.page):
            if not should_continue():
                result.stopped = True
                break
            result.efficy_pages += 1
            queued_before = result.counters["import_queued"]
            persons = [p for p in one_record_each(records, result.counters, result.page) if p["K_CONTACT"] not in skip]
            # the per-person path re-reads each chunk's states right before syncing it (_sync_batch); import
            # mode reads the page's states first to split the persons, diff mode counts what the chunks read
            sync_all = partial(
                _sync_batch, pool, syncer, states, batched=batched, plain=plain, query_tags=query_tags,
                reread=lambda keys: efficy.get_persons(keys, fields),
            )  # fmt: skip
            known: dict[int, PersonState] = {}
            if importer is not None:
                known = states.get_many(cfg.integration_id, [p["K_CONTACT"] for p in persons])
                result.counters.update(base_counts(known.values()))
            if importer is not None and queue is not None:
                # import mode with a collector (collect.py): queue the keys an import can carry, gathered
                # across pages into files; the rest goes person by person now. Nothing is stored for the
                # queued persons until their import reports them done.
                rows, others = importer.split(persons, known)
                number = int(descriptor["first"]) + result.efficy_pages - 1
                if rows:
                    queue(number, int(descriptor["page_size"]), [row.key for row in rows])
                result.counters["import_queued"] += len(rows)
                # the states read for the split, moments ago, serve the per-person path too (no second read)
                persons, outcomes = others, sync_all(others, known=known)
            elif importer is not None:
                outcomes = importer.write(persons, known, sync_all)
                result.counters.update(importer.take_counters())
            else:
                outcomes = sync_all(persons, seen=known, should_continue=should_continue)
                result.counters.update(base_counts(known.values()))  # what each person held before: the breaker's base
                if len(outcomes) < len(persons):  # the run ended (a cancel): no chunk was started after it
                    result.stopped = True
                    persons = persons[: len(outcomes)]
            for person, outcome in zip(persons, outcomes, strict=True):
                if int(person["K_CONTACT"]) in counted:  # a seam window's person whose page held (and counted) it
                    continue
                reason = skip_label(cfg, person) if outcome.reason and outcome.result != "failed" else None
                result.counters.update(tally(outcome, skip_reason=reason))
                result.counters.update(removal_counts(outcome.removals))
            result.persons += len(persons) + result.counters["import_queued"] - queued_before
            if result.stopped:
                break
    return result


def _sync_batch(
    pool: ThreadPoolExecutor,
    syncer: PersonSyncer,
    states: PersonStates,
    persons: list[dict[str, Any]],
    seen: dict[int, PersonState] | None = None,
    *,
    known: dict[int, PersonState] | None = None,
    batched: BatchedStates | None = None,
    plain: PersonSyncer | None = None,
    query_tags: Callable[[int], set[str]] | None = None,
    should_continue: Callable[[], bool] | None = None,
    reread: Callable[[list[int]], dict[int, dict[str, Any]]] | None = None,
) -> list[Outcome]:
    """The per-person path, PERSON_THREADS persons at a time (each waits on APSIS round trips, not on CPU).

    `should_continue` is asked before a chunk after the first, at most every STOP_CHECK_SECONDS: once the run has
    ended (a cancel), no new chunk starts, the chunks syncing finish and are written; the outcomes are a prefix.

    Each chunk's stored states (and APSIS opt-outs) are read in one consistent BatchGetItem right before the
    chunk is synced (while the chunk before it finishes: CHUNKS_AHEAD), and that read is the one the opt-in check
    needs (`sync(fresh=True)`; its write-aheads too): one read per chunk. What the per-person re-read
    guarded against still holds: the read is seconds, not a page, before the opt-ins go out; a state stored
    meanwhile by another sync fails our conditional put (ConflictingWrite: planned again); real-time changes
    are parked while the run lasts; and an APSIS opt-out recorded in those seconds lies within
    OPT_IN_RACE_MARGIN of the opt-in we stamp (consent.py), so the slot reads "unknown" and the next
    sync sends the opt-out again. An opt-out is never lost to this older opt-in.

    `known`: states the caller read consistently moments ago for all of `persons` (import mode reads the page's
    states to split it): no chunk read, and each person about to be opted in is re-read by the syncer itself.
    `batched`: the syncer's store holds its puts (page_states.py); they are written once the chunk is done (by
    one writer thread, while the next chunk is read and synced), also when a person of the chunk failed, and
    a person whose state was refused is synced again by `plain` (the syncer on the plain store) from a fresh
    read: `reread` (Efficy, by keys) gives their snapshot as it is now (_settle)."""
    outcomes: list[Outcome] = []
    read_now = known is None
    in_flight: deque[tuple[list[dict[str, Any]], list[Future[Outcome]]]] = deque()
    behind: tuple[list[dict[str, Any]], list[Outcome], Future[set[int]] | None] | None = None
    # one writer thread: a chunk's states are written while the next chunks sync; leaving the block waits for
    # the last write, also when a person failed
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="page-writes") as writer:

        def write(chunk: list[dict[str, Any]]) -> Future[set[int]] | None:
            if batched is None:
                return None
            return writer.submit(batched.write, batched.take(int(p["K_CONTACT"]) for p in chunk))

        written: list[tuple[list[dict[str, Any]], list[Future[Outcome]], Future[set[int]] | None]] = []

        def finish_oldest() -> None:
            nonlocal behind
            chunk, futures = in_flight.popleft()
            wait(futures)
            # what did reach APSIS is written even when a person of the chunk failed (raised just below)
            writing = write(chunk)
            written.append((chunk, futures, writing))
            done = [future.result() for future in futures]
            if behind is not None:
                outcomes.extend(_settle(pool, states, plain, *behind, query_tags=query_tags, reread=reread))
            behind = (chunk, done, writing)
            written.clear()

        try:
            asked = time.monotonic()  # the page asked before reading these persons from Efficy
            for start in range(0, len(persons), CHUNK):
                if start and should_continue is not None and time.monotonic() - asked >= STOP_CHECK_SECONDS:
                    asked = time.monotonic()
                    if not should_continue():
                        if batched is not None:
                            batched.run_ended()  # chunks in flight are written with conditions now
                        break
                chunk = persons[start : start + CHUNK]
                if known is None:
                    fresh = states.get_many(syncer.cfg.integration_id, [p["K_CONTACT"] for p in chunk])
                    if seen is not None:
                        seen.update(fresh)  # `seen`: the states as read before the sync, for the caller's counts
                    if batched is not None:  # the opt-ins' write-aheads, in one request (page_states.py)
                        batched.announce_chunk(chunk_write_aheads(syncer.cfg, chunk, fresh, query_tags, utc_now()))
                else:
                    fresh = known

                def one(person: dict[str, Any], fresh: dict[int, PersonState] = fresh) -> Outcome:
                    key = person["K_CONTACT"]
                    tags = query_tags(key) if query_tags is not None else None
                    return syncer.sync(key, person, fresh.get(key), fresh=read_now, query_tags=tags)

                in_flight.append((chunk, [pool.submit(contextvars.copy_context().run, one, p) for p in chunk]))
                if len(in_flight) > CHUNKS_AHEAD:
                    finish_oldest()
            while in_flight:
                finish_oldest()
        except BaseException:
            for chunk, futures in in_flight:  # chunks already syncing: what they sent to APSIS is written too
                wait(futures)
                written.append((chunk, futures, write(chunk)))
            # and a state refused there is marked as _settle would (the page fails: its retry re-plans from it)
            unsettled: list[tuple[list[dict[str, Any]], Sequence[Outcome | None], Future[set[int]] | None]] = []
            if behind is not None:
                unsettled.append(behind)
            unsettled += [(chunk, [_outcome(f) for f in futures], writing) for chunk, futures, writing in written]
            for chunk, done, writing in unsettled:
                _mark_refused(states, syncer.cfg.integration_id, chunk, done, writing)
            raise
        if behind is not None:
            outcomes.extend(_settle(pool, states, plain, *behind, query_tags=query_tags, reread=reread))
    return outcomes


def _outcome(future: Future[Outcome]) -> Outcome | None:
    """A person's outcome, None when their sync raised."""
    return future.result() if future.exception() is None else None


def _mark_refused(
    states: PersonStates,
    integration_id: str,
    chunk: list[dict[str, Any]],
    done: Sequence[Outcome | None],
    writing: Future[set[int]] | None,
) -> None:
    """_settle's first half, when the page fails (a person of it raised): what a person whose state the batch
    refused sent is marked unknown on the newer state, so the retried page sends its decision again. Without
    it, the retry planned nothing against the newer state and the page's older opt-in stayed in APSIS. A
    failure here is logged: it must not hide the page's own error."""
    try:
        refused = writing.result() if writing is not None else set()
        now = utc_now()
        for person, outcome in zip(chunk, done, strict=True):
            if outcome is not None and int(person["K_CONTACT"]) in refused and outcome.operations:
                reconcile_sent(states, integration_id, int(person["K_CONTACT"]), list(outcome.operations), now)
    except Exception:
        logger.exception("page failed: marking the states its batch write refused failed too")


def _settle(
    pool: ThreadPoolExecutor,
    states: PersonStates,
    plain: PersonSyncer | None,
    chunk: list[dict[str, Any]],
    done: list[Outcome],
    writing: Future[set[int]] | None,
    *,
    query_tags: Callable[[int], set[str]] | None = None,
    reread: Callable[[list[int]], dict[int, dict[str, Any]]] | None = None,
) -> list[Outcome]:
    """A chunk's outcomes once its states are written. A person whose state the batch refused was stored
    meanwhile by a newer sync (a write-back, real time after a cancel), while this page's calls went out from
    an older read: APSIS may now hold the page's older values (an opt-in the CRM or the person has withdrawn
    since) and the stored state does not know it. What the page sent is marked unknown there
    (sync.reconcile_sent, as the per-person put and the import collector do), and the person is synced again
    by `plain` from a fresh Efficy read (`reread`), so a withdrawn opt-in is withdrawn now. Synced again from
    the page's own snapshot, they planned nothing (it is older) and APSIS kept the opt-in for good. A person
    Efficy no longer has is left to the delete ("stale")."""
    refused = writing.result() if writing is not None else set()
    if not refused or plain is None:
        return done
    integration_id = plain.cfg.integration_id
    now = utc_now()
    for person, outcome in zip(chunk, done, strict=True):
        if int(person["K_CONTACT"]) in refused and outcome.operations:
            reconcile_sent(states, integration_id, int(person["K_CONTACT"]), list(outcome.operations), now)
    again = [p for p in chunk if int(p["K_CONTACT"]) in refused]
    gone: set[int] = set()
    if reread is not None:
        current = reread([int(p["K_CONTACT"]) for p in again])
        gone = {int(p["K_CONTACT"]) for p in again} - set(current)
        again = [current[int(p["K_CONTACT"])] for p in again if int(p["K_CONTACT"]) in current]
    stored = states.get_many(integration_id, [p["K_CONTACT"] for p in again])

    def retry(person: dict[str, Any]) -> Outcome:
        key = person["K_CONTACT"]
        tags = query_tags(key) if query_tags is not None else None
        return plain.sync(key, person, stored.get(key), fresh=True, query_tags=tags)

    redone = {int(p["K_CONTACT"]): o for p, o in zip(again, map_in_context(pool, retry, again), strict=True)}
    for person, outcome in zip(chunk, done, strict=True):
        if (key := int(person["K_CONTACT"])) in gone:
            redone[key] = Outcome(key, "stale", list(outcome.operations))
    return [redone.get(int(p["K_CONTACT"]), o) for p, o in zip(chunk, done, strict=True)]
