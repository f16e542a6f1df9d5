"""Import mode's collector (the `Imports` state after the pages): one import per file of `import_rows` persons.

Why files, not pages. APSIS One takes at most 10 import requests a minute and 3 imports in flight per account,
and a file of at most 50 MB (contracts/apsis-one.md §4, §9). A page of 500 persons made one import set per
page: 1,000,000 persons were 2,000+ imports, 3.3 h at 10 a minute. The pages now only *queue* the keys of the
persons whose changes an import can carry (already diffed: an unchanged person is not queued); this step
gathers them across pages into files of up to `full_sync.import_rows` rows and sends each file as one import
per kind (attributes + opt-ins, opt-outs, a second channel: import_writer.py), three files in flight.

The default of `import_rows` (config.py, IMPORT_ROWS_DEFAULT = 20,000), from the arithmetic:
- a row is key + e-mail + mobile + about ten attributes, a few consent cells and tags: ≈ 300-500 bytes, so the
  50 MB limit allows ≈ 100,000 rows; it does not bind;
- a file costs 1 to 3 import requests (one per kind); at 10 requests a minute, 1,000,000 persons in under 30
  minutes needs ≤ 300 requests, so ≥ 10,000 rows a file even when every file has 3 kinds;
- 3 in flight: with APSIS's processing time T per import (not documented), the run takes ≈ imports x T / 3;
  at 20,000 rows, 1,000,000 first-load persons are 50 files x 2 kinds = 100 imports: 10 minutes of requests,
  and T ≤ 54 s keeps it under 30 minutes (T is the assumption the estimate names);
- smaller files fail smaller (a refused file goes person by person), larger ones wait longer (20,000 rows: 10 MB).

Safety. A person's state is written only after the import reporting their row done (a failed import, or a
failed row, takes the per-person path, which re-plans from the stored state); states are written in batches
(PersonStateStore.put_batch explains why no concurrent writer is overwritten). Opt-outs stay a separate kind,
in their own import file. The Efficy records are read again here from the queued Efficy pages (keys only
queued, no personal data), the next files' pages while the current files import.

Query tags travel in the same files (tag columns): a person in a file gets their query-tag changes in their
row; a person who did not change but joined or left a query gets a tags-only row in a last file. Untag only on
positive evidence: the query answered, the person was a member at the last snapshot and is not now, and their
state says the tag was set. The Tags step that follows re-runs the queries, finds nothing left to send for
these persons, tags per person whatever an import refused, and writes the member snapshots.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from typing import Any

from ..clients.http import map_in_context
from ..config import IntegrationConfig
from ..mapping import needed_fields
from ..observability import count, logger
from ..person_plan import CreateProfile, PatchTags
from ..state import PersonState, utc_now
from ..state_updates import apply_operations, stamp_opt_ins, unconfirmed_state, with_tags
from ..store import protocols
from ..store.import_queue import QUEUE_RETENTION_DAYS as QUEUE_RETENTION_DAYS
from ..store.import_queue import ImportQueue as ImportQueue  # the queue's items: store/import_queue.py
from ..store.import_queue import QueuedPage
from ..store.person_items import StaleWrite
from ..sync import Outcome, PersonSyncer, reconcile_sent
from .file_counts import FileCounts, digest
from .import_writer import ImportWriter, _Row
from .report import skip_label
from .tags import record_tags, tag_delta
from .tags_only import tags_only_files

#: imports in flight per account (APSIS One's documented limit)
FILES_IN_FLIGHT = 3
#: stop starting files this long before the Lambda's timeout; the state machine calls the step again
COLLECT_RESERVE_SECONDS = 120.0
PERSON_THREADS = 4
#: Efficy pages of one file read at once (the state machine's default MaxConcurrency reads as many)
EFFICY_READS = 5
#: the longest one import may take before the step gives up (and is retried by the state machine)
IMPORT_TIMEOUT = 600.0


def group_files(entries: list[QueuedPage], rows: int) -> list[list[QueuedPage]]:
    """Consecutive queued pages into files of at most `rows` keys (a page is never split, so a file may hold
    less; one Efficy page larger than `rows` is a file of its own)."""
    files: list[list[QueuedPage]] = []
    current: list[QueuedPage] = []
    size = 0
    for entry in entries:
        if not entry.keys:
            continue
        if current and size + len(entry.keys) > rows:
            files.append(current)
            current, size = [], 0
        current.append(entry)
        size += len(entry.keys)
    if current:
        files.append(current)
    return files


def unique_keys(entries: list[QueuedPage]) -> list[QueuedPage]:
    """Each key once, where first queued: a delete in Efficy between two pages' reads can move a person into
    the page read second, and they must not be in two files (two imports and two state writes at once)."""
    seen: set[int] = set()
    out = []
    for entry in entries:
        keys = tuple(k for k in entry.keys if k not in seen)
        seen.update(keys)
        out.append(QueuedPage(entry.page, entry.efficy_page, entry.page_size, keys))
    return out


def read_file_persons(cfg: IntegrationConfig, efficy: Any, group: list[QueuedPage]) -> list[dict[str, Any]]:
    """The queued persons as Efficy shows them now: their Efficy pages read again (one call per 500 persons,
    not one per 10); a key a delete moved to another page is read by key; one Efficy no longer has is left
    out (a deleted person is the delete webhook's, never a guess of ours)."""
    fields = needed_fields(cfg)
    found: dict[int, dict[str, Any]] = {}
    wanted: set[int] = set()
    # a file's pages are read EFFICY_READS at a time, as the state machine's pages read them
    with ThreadPoolExecutor(max_workers=EFFICY_READS, thread_name_prefix="file-pages") as pool:
        read = map_in_context(
            pool, lambda e: efficy.list_persons_page(e.efficy_page, e.page_size, fields, include_profiles=True), group
        )
        for entry, records in zip(group, read, strict=True):
            keys = set(entry.keys)
            wanted |= keys
            for person in records:
                key = person.get("K_CONTACT")
                if isinstance(key, int) and key in keys:
                    found[key] = person
    missing = sorted(wanted - set(found))
    if missing:
        found.update(efficy.get_persons(missing, fields))
    return [found[k] for k in sorted(found)]


class Collector:
    """One call of the Imports step: files from `start` on, FILES_IN_FLIGHT at a time, until time runs low."""

    def __init__(
        self,
        cfg: IntegrationConfig,
        *,
        efficy: Any,
        apsis: Any,
        states: protocols.PersonStates,
        syncer: PersonSyncer,
        import_rows: int,
        on_counters: Callable[[str, Counter[str]], bool | None],
        poll_interval: float = 0.2,
        hold_removals: bool = False,
        should_continue: Callable[[], bool] | None = None,
    ) -> None:
        """`hold_removals`: the breaker holds this run's removals: a person with one goes one by one (through
        the syncer's gate) and query untags are left to the gated Tags step; files carry additions only.
        `should_continue`: is the run still active? Asked before each file: a cancel ends the run (the lock is
        released, the parked real-time changes are applied again) while this step may still be importing."""
        self.cfg = cfg
        self.hold_removals = hold_removals
        self.efficy = efficy
        self.apsis = apsis
        self.states = states
        self.syncer = syncer
        self.import_rows = import_rows
        self.on_counters = on_counters
        self.poll_interval = poll_interval
        self.should_continue = should_continue

    def run(
        self,
        entries: list[QueuedPage],
        query_changes: dict[int, dict[str, bool]],
        *,
        start: int = 0,
        time_left: Callable[[], float] | None = None,
    ) -> dict[str, Any]:
        """Files from `start` on, FILES_IN_FLIGHT at a time: a file starts as soon as one in flight is done (not
        once a whole wave of three is: APSIS's processing times differ, and a wave waited for its slowest file
        with the two other slots idle), its Efficy pages read while the files before it import. When time runs
        low no file is started any more and the ones in flight are waited for, so `next` is a file boundary:
        every file before it is done."""
        files = group_files(unique_keys(entries), self.import_rows)
        if files:  # the progress bar's "importing: N/M files" (counted once per run, whatever the retries)
            self.on_counters("import-files", Counter({"import_files": len(files)}))
        started = start
        stopped = cancelled = False
        # FILES_IN_FLIGHT threads import while as many read the next files' Efficy pages
        with ThreadPoolExecutor(max_workers=2 * FILES_IN_FLIGHT, thread_name_prefix="imports") as pool:
            reads: dict[int, Future[list[dict[str, Any]]]] = {}
            running: dict[Future[None], int] = {}

            def read_ahead() -> None:
                for number in range(started, min(len(files), started + FILES_IN_FLIGHT)):
                    if number not in reads:
                        reads[number] = pool.submit(read_file_persons, self.cfg, self.efficy, files[number])

            read_ahead()
            while running or (started < len(files) and not stopped):
                while not stopped and started < len(files) and len(running) < FILES_IN_FLIGHT:
                    if started > start and time_left is not None and time_left() < COLLECT_RESERVE_SECONDS:
                        stopped = True
                        break
                    if not self._active():  # cancelled or ended: no new file (those in flight finish)
                        stopped = cancelled = True
                        break
                    persons = reads.pop(started).result()
                    token = f"import-file-{started}"
                    running[pool.submit(self._file, token, persons, query_changes, _timeout(time_left))] = started
                    started += 1
                    read_ahead()
                if running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        del running[future]
                        future.result()  # a failed file fails the step (retried); the others end first
        if cancelled:
            return {"files": len(files), "next": started, "more": False, "stopped": True}
        if stopped:
            return {"files": len(files), "next": started, "more": True}
        if start <= len(files):
            if not self._active():  # cancelled while the last file imported: the tags-only file starts no more
                return {"files": len(files), "next": len(files), "more": False, "stopped": True}
            if time_left is not None and time_left() < COLLECT_RESERVE_SECONDS:  # its import is waited for too
                return {"files": len(files), "next": len(files), "more": True}
            queued = {key for entry in entries for key in entry.keys}
            self._tags_only({k: v for k, v in query_changes.items() if k not in queued}, len(files), time_left)
        return {"files": len(files), "next": len(files) + 1, "more": False}

    # ---- one file -------------------------------------------------------------------------------------------
    def _file(
        self, token: str, persons: list[dict[str, Any]], query_changes: dict[int, dict[str, bool]], timeout: float
    ) -> None:
        """Imports one file, stores what it did, and sends what it could not say (or what failed) one by one.
        An import still running at `timeout` raises ApsisUnavailable: the step is retried, and the file sent
        again is safe (an import upserts; no state was written for it)."""
        began = time.monotonic()  # the progress bar's import ETA: the mean time of a file (import_file_ms)
        known = self.states.get_many(self.cfg.integration_id, [p["K_CONTACT"] for p in persons])
        writer = self._writer(timeout)
        rows, others = writer.split(persons, known)
        for row in rows:
            wanted = query_changes.get(row.key)
            if wanted and (tags := self._allowed(tag_delta(wanted, row.state, will_exist=True))):
                row.ops = [*row.ops, PatchTags(row.desired.profile_key, tags)]
        try:
            failed = writer.import_rows(rows)
        except Exception:
            if writer.uploaded:
                self._unconfirmed(rows)
            raise  # the step fails and is retried (or the run ends): the file is sent again, or APSIS applies it
        counts = FileCounts()  # each person once across the step's attempts (file_counts.py)
        counts.file.update(writer.take_counters())
        counts.file.update(import_files_done=1, import_file_ms=round((time.monotonic() - began) * 1000))
        done = [row for row in rows if row.key not in failed]
        stale = self._store(done)
        for row in done:
            if row.key not in stale:
                counts.person(Outcome(row.key, "synced", list(row.ops)))
        again = others + [row.person for row in rows if row.key in failed]
        try:
            # the raced rows first: APSIS may hold this file's older values, which the newer stored state does
            # not know until they are marked; an outage among the others left them unmarked for the retry
            self._settle_races([row for row in done if row.key in stale], counts)
            self._one_by_one(again, known, counts)  # counts each person as they finish
        except Exception:
            # what the import and the finished persons did is counted now: the retry finds those persons stored
            # and unchanged, and a per-person outage had the report say "unchanged" for persons the run updated
            counts.report(self.on_counters, token, complete=False)
            raise
        counts.report(self.on_counters, token, complete=True)

    def _writer(self, timeout: float) -> ImportWriter:
        """One file's writer: every row it gets is imported (the caller sized the file)."""
        return ImportWriter(
            self.cfg,
            self.apsis,
            self.states,
            min_rows=0,
            poll_interval=self.poll_interval,
            timeout=timeout,
            hold_removals=self.hold_removals,
        )

    def _active(self) -> bool:
        return self.should_continue is None or self.should_continue()

    def _store(self, rows: list[_Row]) -> set[int]:
        """States of the rows the import reported done; the keys refused as stale. In batches while the run is
        active (store/batch_writes.py says why no writer can be overwritten then: the real-time worker is
        parked). Once it has ended (a cancel while this file imported), real-time changes apply again, so
        each state takes the conditional put: a newer state stored meanwhile refuses ours."""
        now = utc_now()
        new = [stamp_opt_ins(apply_operations(row.state, row.desired, row.ops), row.ops, now) for row in rows]
        if self._active():
            return {int(s.person_key) for s in self.states.put_batch(new)}

        def put(state: PersonState) -> int | None:
            try:
                self.states.put(state)
                return None
            except StaleWrite:
                return int(state.person_key)

        return {key for key in _in_parallel(put, new) if key is not None}

    def _unconfirmed(self, rows: list[_Row]) -> None:
        """A file was uploaded but its import never reported back (the wait timed out, a poll failed): APSIS may
        apply it later, after the run has ended too. Each row's state is marked so that what the file sent is
        unknown (state_updates.unconfirmed_state; a person with no state gets one), so a membership withdrawn
        meanwhile is withdrawn at the next sync instead of an opt-in staying in APSIS that no state knows of.
        In batches while the run is active (as `_store`), conditional puts once it has ended. A failure here
        is logged, never hides the import's own error."""
        now = utc_now()
        try:
            again = rows
            if self._active():
                marked = [
                    state
                    for row in rows
                    if (state := unconfirmed_state(row.state, self.cfg.integration_id, row.key, row.ops, now))
                ]
                refused = {int(state.person_key) for state in self.states.put_batch(marked)}
                again = [row for row in rows if row.key in refused]
            # a newer state stored meanwhile (or the run ended: conditional puts, in parallel, as a file's rows
            # may be thousands and the Lambda's time short): mark that one
            mark = partial(reconcile_sent, self.states, self.cfg.integration_id, now=now, unconfirmed=True)
            _in_parallel(lambda row: mark(key=row.key, sent=row.ops), again)
        except Exception:
            logger.exception("import unconfirmed: marking its persons' states failed")
            return
        count("ImportUnconfirmed", len(rows))
        logger.warning("import did not report back: what it sent is marked unknown", extra={"persons": len(rows)})

    def _settle_races(self, rows: list[_Row], counts: FileCounts) -> None:
        """Rows APSIS imported whose state a newer sync stored meanwhile (StaleWrite). APSIS may now hold this
        file's older values (an opt-in the CRM has since withdrawn) while the stored state does not know it:
        what the file sent is marked unknown there (sync.reconcile_sent), and the persons are synced again
        from a fresh Efficy read, so a withdrawn opt-in is withdrawn now, not at the next full sync. Each one is
        counted into `counts` as they finish, so an outage of another leaves them counted.
        An import creates a profile APSIS lacks, so the stored state is told the profile exists, and a person
        Efficy lost is synced as deleted: a delete real time applied before the file landed (a cancelled run's
        import) was undone by it, and nothing deleted the profile again."""
        if not rows:
            return
        now = utc_now()
        for row in rows:
            created = [CreateProfile(row.desired.profile_key)] if row.desired.profile_key else []
            reconcile_sent(self.states, self.cfg.integration_id, row.key, [*created, *row.ops], now)
        keys = [row.key for row in rows]
        fresh = self.efficy.get_persons(keys, needed_fields(self.cfg))  # a person Efficy lost: deleted
        stored = self.states.get_many(self.cfg.integration_id, keys)
        self._one_by_one([fresh[k] for k in keys if k in fresh], stored, counts, [k for k in keys if k not in fresh])

    def _one_by_one(
        self,
        persons: list[dict[str, Any]],
        known: dict[int, PersonState],
        counts: FileCounts,
        gone: Collection[int] = (),
    ) -> None:
        """Syncs `persons` (and the deletes of `gone`, keys Efficy lost), counting into `counts` each one that
        finished; the first error is raised once all are done, so the caller can count what the others did (a
        retry finds them unchanged)."""
        work: list[tuple[int, dict[str, Any] | None]] = [(p["K_CONTACT"], p) for p in persons] + [
            (k, None) for k in gone
        ]

        def one(item: tuple[int, dict[str, Any] | None]) -> tuple[Any, Exception | None]:
            try:
                return self.syncer.sync(item[0], item[1], known.get(item[0])), None
            except Exception as exc:
                return None, exc

        with ThreadPoolExecutor(max_workers=PERSON_THREADS, thread_name_prefix="import-rows") as pool:
            results = list(map_in_context(pool, one, work))
        first: Exception | None = None
        for (_key, person), (outcome, error) in zip(work, results, strict=True):
            if error is not None:
                first = first or error
                continue
            labelled = person is not None and outcome.reason and outcome.result != "failed"
            reason = skip_label(self.cfg, person) if labelled and person is not None else None
            counts.person(outcome, reason)
        if first is not None:
            raise first

    def _allowed(self, tags: dict[str, bool]) -> dict[str, bool]:
        """The tag changes a file may carry: all of them, or only additions while the breaker holds removals."""
        return {t: on for t, on in tags.items() if on} if self.hold_removals else tags

    # ---- query tags of persons who did not change ------------------------------------------------------------
    def _tags_only(
        self, changes: dict[int, dict[str, bool]], number: int, time_left: Callable[[], float] | None = None
    ) -> None:
        """Imports of tag columns, `import_rows` rows each, for the persons outside every file whose query
        membership changed; their states are read a chunk at a time as each import is planned (tags_only.py)."""
        for chunk in tags_only_files(self.states, self.cfg.integration_id, changes, self._allowed, self.import_rows):
            writer = self._writer(_timeout(time_left))
            try:
                failed = writer.import_rows(chunk)
            except Exception:
                if writer.uploaded:  # APSIS may still apply these tags: the states must say so (_file)
                    self._unconfirmed(chunk)
                raise
            counters = writer.take_counters()
            done = [row for row in chunk if row.key not in failed]
            now = utc_now()
            changed = {row.key: _tags_of(row) for row in done}
            new = [with_tags(row.state, changed[row.key], updated_at=now) for row in done if row.state is not None]
            for state in self.states.put_batch(new):  # another sync stored them meanwhile: learn it on theirs
                key = int(state.person_key)
                record_tags(self.states, self.cfg.integration_id, key, changed[key])
            for row in done:
                for tag, on in changed[row.key].items():
                    counters[f"tag{'+' if on else '-'}:{tag}"] += 1
            counters["import_tag_rows"] += len(done)
            # named by the chunk's persons, not its offset: a retried step re-plans from the states (the rows the
            # first attempt tagged drop out) and its first chunk reused offset 0's token, whose counts were dropped
            self.on_counters(
                f"import-tags-{number}-{digest(row.key for row in chunk)}", counters
            )  # failed rows: the Tags step tags them


#: conditional state writes at once, once the run has ended (no batch may be used then)
STATE_WRITERS = 16


def _in_parallel(work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """`work` over `items`, STATE_WRITERS at a time (each is one or two DynamoDB round trips), in order."""
    if len(items) <= 1:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=STATE_WRITERS, thread_name_prefix="import-states") as pool:
        return list(map_in_context(pool, work, items))


def _timeout(time_left: Callable[[], float] | None) -> float:
    """How long a file's imports may be waited for (together: ImportWriter._run): IMPORT_TIMEOUT, less when the
    Lambda's time runs out sooner."""
    return IMPORT_TIMEOUT if time_left is None else max(60.0, min(IMPORT_TIMEOUT, time_left() - 30.0))


def _tags_of(row: _Row) -> dict[str, bool]:
    """The tag changes of a tags-only row (its one operation is a PatchTags)."""
    (op,) = row.ops
    return op.tags if isinstance(op, PatchTags) else {}
