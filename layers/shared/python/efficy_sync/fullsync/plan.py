"""Page descriptors: what each page worker fetches, decided up front so pages run in parallel.

Efficy's connector API pages by number (ordered by K_CONTACT) and reports no total, and reading every key
first would cost a million-person CRM two thousand calls before any work starts. So the plan counts by
probing with one-record pages: doubling the index until a probe comes back empty, then bisecting, about
2·log2(N) tiny calls (40 for a million persons). The last descriptor is the "tail": its worker keeps paging
until an empty page, so persons added after the count are still synced.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..clients.errors import TransientError
from ..observability import logger

ProbePage = Callable[[int], bool]  # record index -> whether a record exists there
MAX_TAIL_EXTENSION = 20  # extra Efficy pages the tail worker reads beyond its share before it stops


def count_records(probe: ProbePage) -> int:
    """The number of records, given `probe(i)` for a record index (exponential then binary search). A probe
    that answers "none" is asked again, and only two empty answers count: one empty answer (a read cut off) made
    the plan count 128 persons of 300, and the tail, reading a bounded extension past the count, left the rest
    unsynced (it now fails loudly there instead, page.efficy_pages; this keeps it from coming to that)."""

    def exists(index: int) -> bool:
        return probe(index) or probe(index)

    if not exists(0):
        return 0
    low = 0  # exists(low) is True
    high = 1
    while exists(high):
        low, high = high, high * 2
    while high - low > 1:  # exists(low) and not exists(high)
        middle = (low + high) // 2
        if exists(middle):
            low = middle
        else:
            high = middle
    return high


def key_at(efficy: Any, index: int) -> int | None:
    """The K_CONTACT at record `index` of the export (None past the end; an empty answer is asked again)."""
    for _ in range(2):
        records = efficy.list_persons_page(index, 1, ["K_CONTACT"], include_profiles=False)
        if records:
            return int(records[0]["K_CONTACT"])
    return None


def count_up_to(efficy: Any, key: int, upper: int) -> int:
    """How many records have a K_CONTACT up to `key`, among the first `upper` (binary search, about log2 N
    one-record reads; the export is in K_CONTACT order). Seams uses it to count the deletes before the plan's
    last key: new persons get larger keys and do not move it, so they cannot hide a delete as they hid the drop
    of the record count (a run that deleted one person and created another saw no shift, no window, and the
    person the delete pushed across a page boundary was never synced)."""
    low, high = 0, upper  # records [0, low) are <= key; records [high, ...) are > key or past the end
    while low < high:
        middle = (low + high) // 2
        found = key_at(efficy, middle)
        if found is not None and found <= key:
            low = middle + 1
        else:
            high = middle
    return low


def efficy_probe(efficy: Any) -> ProbePage:
    """One-record pages asking for the key only: the cheapest question Efficy's export answers."""

    def exists(index: int) -> bool:
        return bool(efficy.list_persons_page(index, 1, ["K_CONTACT"], include_profiles=False))

    return exists


def plan_pages(total: int, efficy_page_size: int, page_size: int) -> list[dict[str, Any]]:
    """Descriptors of about `page_size` persons each, made of whole Efficy pages of `efficy_page_size`.

    `{"page": n, "first": first Efficy page, "pages": Efficy pages, "page_size": efficy_page_size,
    "tail": True on the last}`; at least one descriptor, so even an empty CRM has a tail to catch newcomers.
    """
    if efficy_page_size < 1 or page_size < 1:
        raise ValueError("page sizes must be positive")
    per = max(1, page_size // efficy_page_size)
    efficy_pages = -(-total // efficy_page_size) if total else 0
    descriptors: list[dict[str, Any]] = []
    first = 0
    number = 0
    while first < efficy_pages or not descriptors:
        count = min(per, max(efficy_pages - first, 1))
        descriptors.append(
            {"page": number, "first": first, "pages": count, "page_size": efficy_page_size, "tail": False}
        )
        first += count
        number += 1
    descriptors[-1]["tail"] = True
    return descriptors


@contextlib.contextmanager
def noting_waits(runs: Any, run: Any) -> Iterator[None]:
    """Records on the run that the Plan step waits on an outage (the error's class, since when, how many
    attempts), then lets the error go on to the state machine's retry. Without it `full-sync status` showed
    "planning... 0%" for the minutes of those retries, with the reason only in the logs. Best effort: a failed
    note must not hide the error being retried."""
    try:
        yield
    except TransientError as exc:
        with contextlib.suppress(Exception):
            runs.plan_waiting(run, type(exc).__name__)
        raise


def in_key_order(
    pages: Iterable[list[dict[str, Any]]], counters: Counter[str], page: int
) -> Iterator[list[dict[str, Any]]]:
    """The page's Efficy pages as they come, counting (`export_unordered`) each record whose K_CONTACT is
    below the one before it (a copy of the one before is one_record_each's). The plan's count, the tail and
    Seams rest on the export being in K_CONTACT order, which Efficy does not document (contract §4; APSIS's
    connector pages by number): in another order (by
    D_CHANGE, say) a person a change or a delete moved during the run across a page boundary is in no page, and
    the run still succeeded in silence. Now the report says so; a run over a CRM nobody changes meanwhile still
    reads every person, whatever the order."""
    previous: int | None = None
    warned = False
    for records in pages:
        for record in records:
            key = record.get("K_CONTACT")
            if not isinstance(key, int):
                continue
            if previous is not None and key < previous:  # a copy (key == previous) is one_record_each's
                counters["export_unordered"] += 1
                if not warned:
                    warned = True
                    logger.warning(
                        "Efficy's export is not in K_CONTACT order: persons moved during the sync may be missed",
                        extra={"page": page},
                    )
            previous = key
        yield records


def whole_persons(pages: Iterable[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """The Efficy pages as they come, but a person's copies that run on into the next page (an export joined to a
    relation: one row per company, cut by the page size) are moved to the page of the first copy, so that
    one_record_each sees them all. Judged page by page, each copy was synced alone: a person whose copies
    disagreed was opted out and in again in every run, counted twice and never as conflicting. A page whose
    records were all moved is given empty, so the pages keep their numbers (import mode queues by number)."""
    waiting: list[list[dict[str, Any]]] = []  # [0] holds the first copy of `last`; the rest held only its copies
    last: int | None = None
    for records in pages:
        lead = 0
        while waiting and last is not None and lead < len(records) and records[lead].get("K_CONTACT") == last:
            lead += 1
        if lead:
            waiting[0] = [*waiting[0], *records[:lead]]
            records = records[lead:]
        if records:
            yield from waiting
            waiting = []
            keys = [key for record in records if isinstance(key := record.get("K_CONTACT"), int)]
            last = keys[-1] if keys else None
        waiting.append(records)
    yield from waiting


def checked_pages(
    pages: Iterable[list[dict[str, Any]]], counters: Counter[str], page: int
) -> Iterator[list[dict[str, Any]]]:
    """A worker page's Efficy pages, their order checked (in_key_order) and each person's copies on one page
    (whole_persons), for one_record_each to judge."""
    return whole_persons(in_key_order(pages, counters, page))


def one_record_each(records: list[dict[str, Any]], counters: Counter[str], page: int) -> list[dict[str, Any]]:
    """The page's records with a whole K_CONTACT, one per person. Copies that agree are one record; copies that
    disagree (an export joined to a relation, one row per company, or one with the CRM profile and one without)
    are none: synced one after the other (or at once, in two threads), they sent both values and flipped the
    person's consent between opt-in and opt-out at every run. The person is left as APSIS One holds them and
    counted (`export_conflicting`, in the report), never given one of the copies on a guess."""
    by_key: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        key = record.get("K_CONTACT")
        if isinstance(key, int):
            by_key.setdefault(key, []).append(record)
    conflicting = {key for key, copies in by_key.items() if any(c != copies[0] for c in copies[1:])}
    if conflicting:
        counters["export_conflicting"] += len(conflicting)
        logger.warning(
            "Efficy's export listed persons more than once with different values: left as they are this run",
            extra={"page": page, "persons": len(conflicting)},
        )
    return [copies[0] for key, copies in by_key.items() if key not in conflicting]
