"""The report's pages that were not done, kept to a bounded size.

The report is stored in the run item (store/runs.py RunStore.end), and a DynamoDB item holds at most 400 KB.
Listing every page not done (about 50 bytes each, plus up to 1,000 characters of error per failed page) passed
that limit once a run of some 8,000 pages was cancelled or failed early: every attempt to end it was refused
(ValidationException), so the run stayed RUNNING for good. So the report lists only the first LISTED pages with
their (shortened) errors, pages that failed an attempt first since their errors say why, and counts all of them
by error class; the pages with no attempt recorded (never started, or on their first attempt when the run
ended) are counted and given as a few ranges. Whatever the page count (full_sync.page_size 1..5000, any person
count) this stays within a few kilobytes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

#: pages listed one by one, with their error (`full-sync status` prints the first ten)
LISTED = 20
#: characters of a listed page's error kept in the report (page records keep 1,000)
ERROR_CHARS = 300
#: error classes counted by name; the rarer ones are added up under OTHER
CLASSES = 10
#: ranges of pages without an attempt given; the count covers them all
RANGES = 10
NO_RESULT = "no result"
OTHER = "other"
#: the keys this module adds to the report's "pages" (beside "total" and "done")
KEYS = ("failed", "failed_count", "failed_by_error", "unreported")


def error_class(entry: Mapping[str, Any]) -> str:
    """What a failed page's error is, by name: pages record "<ExceptionClass>: <message>"."""
    error = str(entry.get("error") or NO_RESULT)
    return error.split(":", 1)[0].strip()[:60] or NO_RESULT


def summarise(failed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The bounded form of every page not done (each {"page", "attempts", "error"}, in page order)."""
    tried = [p for p in failed if p.get("attempts")]
    untried = [p for p in failed if not p.get("attempts")]
    listed = sorted([*tried[:LISTED], *untried[: max(0, LISTED - len(tried))]], key=lambda p: int(p["page"]))
    classes = Counter(error_class(p) for p in failed).most_common()
    by_error = dict(classes[:CLASSES])
    if len(classes) > CLASSES:
        by_error[OTHER] = by_error.get(OTHER, 0) + sum(n for _, n in classes[CLASSES:])
    return {
        "failed": [
            {
                "page": p["page"],
                "attempts": p.get("attempts", 0),
                "error": str(p.get("error") or NO_RESULT)[:ERROR_CHARS],
            }
            for p in listed
        ],
        "failed_count": len(failed),
        "failed_by_error": by_error,
        "unreported": {"count": len(untried), "ranges": _ranges([int(p["page"]) for p in untried])},
    }


def failed_summary(failed: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None) -> dict[str, Any]:
    """The report's failed-pages part from the full list, or from a report's "pages" already summarised (kept as
    it is; a report written before the summary existed holds the whole list, summarised now)."""
    if isinstance(failed, Mapping):
        if "failed_count" in failed:
            return {key: failed[key] for key in KEYS if key in failed}
        failed = failed.get("failed")
    return summarise(list(failed or []))


def _ranges(pages: list[int]) -> list[str]:
    """ "3", "10-9999": the first RANGES runs of consecutive page numbers."""
    runs: list[list[int]] = []
    for page in sorted(pages):
        if runs and page == runs[-1][1] + 1:
            runs[-1][1] = page
        elif len(runs) < RANGES:
            runs.append([page, page])
        else:
            break
    return [str(a) if a == b else f"{a}-{b}" for a, b in runs]
