"""Whether an APSIS One list answer says it is one page of several: a per-profile consents read and the profile
export are read as the whole list, and neither documents paging (contracts/apsis-one.md §5, §9), so every common
way of saying "there is more" counts. Read as whole, a page of a profile's consents without the opt-out it holds
let a first opt-in overwrite it (existing_optouts.py), and part of an export read as the section made the rest
look "missing" (reconcile.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from efficy_sync.values import whole_number

#: keys of a list answer (or of its `links`) whose value names the next page, or says more follow when true
MORE_PAGES = (
    "next",
    "next_page",
    "next_url",
    "next_page_token",
    "continuation_token",
    "cursor",
    "has_more",
    "hasMore",
    "more",
    "truncated",
    # the same in camelCase, and OData's link
    "nextPage",
    "nextUrl",
    "nextLink",
    "nextPageToken",
    "continuationToken",
    "@odata.nextLink",
)
#: blocks of a list answer that may hold the keys above instead of its top level (HAL's `_links` and the like)
PAGING_BLOCKS = ("links", "_links", "paging", "pagination", "meta")
#: keys of a list answer that count every item of the list, beyond this page
TOTALS = ("total", "total_count", "totalCount", "total_items", "totalItems", "count")


def says_more(answer: Mapping[str, Any], listed: int) -> bool:
    """True when `answer` (a list answer that holds `listed` items) names a next page or says more follow (at its
    top level or in a paging block), or counts more items than it holds (a count as a number or as digits)."""
    blocks = [block for block in map(answer.get, PAGING_BLOCKS) if isinstance(block, Mapping)]
    if any(_set(holder.get(name)) for holder in (answer, *blocks) for name in MORE_PAGES):
        return True
    totals = (whole_number(answer.get(name)) for name in TOTALS)
    return any(total is not None and total > listed for total in totals)


def _set(value: Any) -> bool:
    """A next-page value that says something: not absent, null, false, empty, or "false"/"0" as text."""
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "null", "none")
    return bool(value)
