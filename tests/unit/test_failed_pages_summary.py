"""The report's pages not done stay a few kilobytes whatever the run's size (fullsync/failed_pages.py).

The report listed every page not done, with up to 1,000 characters of error each, and is stored in the run item
(DynamoDB: 400 KB at most): a run of some 8,000 pages could no longer be ended. Now it keeps the first pages,
counts by error class and the pages with no attempt as ranges; a report written before (the whole list) is
summarised when read.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from efficy_sync.fullsync.failed_pages import CLASSES, LISTED, OTHER, RANGES, failed_summary, summarise
from efficy_sync.fullsync.report import build_report, current_report, render_report


def test_a_million_pages_with_long_and_varied_errors_summarise_to_a_few_kilobytes() -> None:
    # the worst case: every other page failed with its own error class and 1,000 characters, the rest never ran
    failed = [
        {"page": n, "attempts": 6, "error": f"Error{n % 997}: " + "x" * 1000}
        if n % 2
        else {"page": n, "attempts": 0, "error": "no result"}
        for n in range(1_000_000)
    ]

    summary = summarise(failed)

    assert len(json.dumps(summary)) < 12_000
    assert summary["failed_count"] == 1_000_000 and len(summary["failed"]) == LISTED
    assert all(p["attempts"] for p in summary["failed"])  # the pages that say why come first
    assert len(summary["failed_by_error"]) == CLASSES + 1 and sum(summary["failed_by_error"].values()) == 1_000_000
    assert summary["failed_by_error"][OTHER] > 0
    assert summary["unreported"]["count"] == 500_000 and len(summary["unreported"]["ranges"]) == RANGES


def test_a_few_failed_pages_are_all_listed_and_a_summary_is_kept_as_it_is() -> None:
    failed = [
        {"page": 9, "attempts": 0, "error": "no result"},
        {"page": 8, "attempts": 6, "error": "EfficyUnavailable: 504"},
    ]
    summary = summarise(failed)
    assert summary["failed"] == sorted(failed, key=lambda p: p["page"])
    assert summary["unreported"] == {"count": 1, "ranges": ["9"]}
    assert failed_summary({"total": 10, "done": 8, **summary}) == summary
    assert failed_summary(None) == summarise([])


def test_a_report_written_before_the_summary_still_reads() -> None:
    run = SimpleNamespace(
        integration_id="acme",
        run_id="r",
        status="failed",
        dry_run=False,
        write_mode="diff",
        started_at="2026-01-01T00:00:00Z",
        ended_at="2026-01-01T00:10:00Z",
        pages_total=30,
        counters={"pages_done": 5},
        report=None,
    )
    old = build_report(run, status="failed")
    old["pages"] = {  # the whole list, as reports were written before
        "total": 30,
        "done": 5,
        "failed": [{"page": n, "attempts": 0, "error": "no result"} for n in range(5, 30)],
    }
    run.report = old

    assert "  pages: 5/30 done, 25 failed" in render_report(current_report(run))  # read as it was written
    rebuilt = build_report(run, status="failed", failed_pages=old["pages"])  # as a stopped run's report is
    assert rebuilt["pages"]["failed_count"] == 25 and len(rebuilt["pages"]["failed"]) == LISTED
    assert "  25 pages without a result: 5-29" in render_report(rebuilt)
