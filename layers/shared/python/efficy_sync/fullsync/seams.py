"""Seams: the persons a delete in Efficy may have pushed across a page boundary while the pages ran.

Efficy's connector export pages by number over K_CONTACT order, so deleting a person moves everyone after
them one place earlier. A person who was first on page N when page N-1 was read, and last on page N-1 when
page N was read, is in neither page. New persons get larger keys, so they only lengthen the tail; deletes are
the only shift to make up for. After the pages, if the run saw `shift` deletes (the parked delete webhooks,
the drop in the record count, or how far the plan's last key moved up, whichever is larger: new persons hide a
drop in the count but cannot move that key), every such person now sits within `shift` places
before a page boundary. So the Seams step reads that window before each boundary (one small Efficy call per
boundary, only on runs that saw a delete) and syncs it like any page: persons already synced cost no APSIS
call and no write, the ones the shift hid are brought up to date.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..config import IntegrationConfig
from ..safety import RemovalGate
from ..store.protocols import PersonStates
from .page import sync_page

#: the base the breaker judges removals against is counted by the pages; a window would count it again
BASE_PREFIX = "base:"

#: stop this long before the Lambda's timeout and let the state machine call the step again
SEAM_RESERVE_SECONDS = 45.0


def window_size(page_size: int, shift: int) -> int:
    """The smallest divisor of `page_size` that is at least `shift` (or `page_size` itself): Efficy pages
    of that size tile the records exactly, so one of them ends right at a page boundary."""
    for size in range(max(1, shift), page_size + 1):
        if page_size % size == 0:
            return size
    return page_size


def seam_windows(descriptors: list[dict[str, Any]], shift: int) -> list[dict[str, Any]]:
    """A page descriptor (the shape sync_page reads) for the `shift` records before each Efficy page boundary,
    `seam` naming it. Every Efficy page a worker reads is a boundary, not only a worker's first: with
    `full_sync.page_size` above `efficy.page_size` a worker reads several, and a delete between two of its
    reads pushed a person across a boundary no window covered (never synced, the run SUCCEEDED)."""
    if shift <= 0:
        return []
    windows = []
    for descriptor in descriptors:
        first, size = int(descriptor["first"]), int(descriptor["page_size"])
        for efficy_page in range(max(first, 1), first + max(1, int(descriptor.get("pages", 1)))):
            width = window_size(size, shift)
            count = -(-shift // width)  # Efficy pages of `width` records that cover `shift` records
            boundary = efficy_page * size // width  # the boundary as an index in pages of `width`
            windows.append(
                {
                    "page": int(descriptor["page"]),
                    "seam": efficy_page,
                    "first": max(0, boundary - count),
                    "pages": min(count, boundary),
                    "page_size": width,
                    "tail": False,
                }
            )
    return windows


@dataclass
class SeamsResult:
    next: int  # index of the first window not done yet
    more: bool = False
    counters: Counter[str] = field(default_factory=Counter)


def resync_seams(
    cfg: IntegrationConfig,
    windows: list[dict[str, Any]],
    *,
    efficy: Any,
    apsis: Any,
    states: PersonStates,
    dry_run: bool,
    max_concurrency: int,
    start: int = 0,
    time_left: Callable[[], float] | None = None,
    should_continue: Callable[[], bool] = lambda: True,
    on_window: Callable[[dict[str, Any], Counter[str]], None] | None = None,
    removal_gate: RemovalGate | None = None,
    counted: Collection[int] = (),
    skip: Collection[int] = (),
) -> SeamsResult:
    """Syncs windows[start:], `max_concurrency` at a time (each paced at that share of the APSIS rate, as pages
    are); `on_window` hears of each window as soon as it is done. Retryable errors propagate: the state
    machine calls again from `start` and persons already done cost nothing."""
    result = SeamsResult(next=start)
    workers = max(1, max_concurrency)

    def one(window: dict[str, Any]) -> Counter[str]:
        page = sync_page(
            cfg,
            window,
            efficy=efficy,
            apsis=apsis,
            states=states,
            dry_run=dry_run,
            write_mode="diff",  # a few persons per window: per-person calls beat an import
            max_concurrency=workers,
            should_continue=should_continue,
            removal_gate=removal_gate,
            counted=counted,
            skip=skip,
        )
        counters = page.counters + Counter(seam_windows=1, seam_persons=page.persons)
        if on_window is not None:
            on_window(window, counters)
        return counters

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seams") as pool:
        while result.next < len(windows):
            if result.next > start and time_left is not None and time_left() < SEAM_RESERVE_SECONDS:
                result.more = True
                break
            if not should_continue():
                break
            chunk = windows[result.next : result.next + workers]
            for counters in pool.map(one, chunk):
                result.counters.update(counters)
            result.next += len(chunk)
    return result


#: counters of a window that would count again persons its page already counted
_RECOUNTED = ("persons", "unchanged", "skipped", "export_unordered", "export_conflicting")


def report_counters(counters: Counter[str]) -> dict[str, int]:
    """What a window adds to the run: what it changed (created, updated, consents, tags, failures) and the
    seam_* counts, not the persons its neighbouring page already counted."""
    return {
        name: n
        for name, n in counters.items()
        if name not in _RECOUNTED and not name.startswith(("skip:", BASE_PREFIX)) and n
    }
