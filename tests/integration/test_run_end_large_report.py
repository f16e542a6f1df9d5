"""A run of many pages can be ended: its report keeps a bounded summary of the pages not done.

The report listed every page not done (about 50 bytes each, plus up to 1,000 characters of error per failed
page) and is stored in the run item: cancelling or failing a run of some 8,000 pages passed DynamoDB's 400 KB
item limit, every attempt to end it was refused (ValidationException), and the run stayed RUNNING. Now the report
lists the first pages with their errors and counts them all by error class, with the pages that have no attempt
as a count and a few ranges (fullsync/failed_pages.py); `full-sync status` prints the counts.
"""

from __future__ import annotations

import json

import pytest
from efficy_sync.fullsync.report import current_report, render_report
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.fullsync_harness import (
    ARN,
    World,
    apsis_sim,  # noqa: F401  (fixtures)
    raw_config,
)

PAGES = 10_000  # 1,000,000 persons at full_sync.page_size 100 (the config allows 1..5000)


@pytest.fixture
def world(in_process_aws: str, sim: EfficySimulator, apsis_sim: ApsisSimulator) -> World:
    return World(in_process_aws, sim, apsis_sim, raw_config())


def test_cancelling_a_run_of_10000_pages_ends_it(world: World) -> None:
    fs = world.fs
    run = fs.begin({"integration_id": "p17"}, f"{ARN}big")
    stored = fs.runs.get("p17", run["run_id"])
    assert stored is not None
    fs.runs.set_plan(stored, pages_total=PAGES, persons_estimate=PAGES * 100, plan_key="k")
    for page in range(3):
        fs.runs.page_done("p17", run["run_id"], page, 100, {"persons": 100, "created": 100})
    assert fs.parking.park("p17", 42, run["run_id"])

    out = fs.execution_ended(f"{ARN}big", "ABORTED")  # `efficy-sync full-sync cancel p17` a few minutes in

    assert out["requeued"] == 1
    ended = fs.runs.get("p17", run["run_id"])
    assert ended is not None and ended.status == "cancelled", ended.status
    pages = ended.report["pages"]  # type: ignore[index]
    assert (pages["failed_count"], pages["unreported"]["count"]) == (PAGES - 3, PAGES - 3)
    assert pages["unreported"]["ranges"] == [f"3-{PAGES - 1}"] and len(pages["failed"]) == 20
    assert f"  pages: 3/{PAGES} done, {PAGES - 3} not done" in render_report(current_report(ended))


def test_failing_a_run_whose_pages_failed_with_long_errors_ends_it(world: World) -> None:
    fs = world.fs
    run = fs.begin({"integration_id": "p17"}, f"{ARN}long")
    stored = fs.runs.get("p17", run["run_id"])
    assert stored is not None
    fs.runs.set_plan(stored, pages_total=PAGES, persons_estimate=PAGES * 100, plan_key="k")
    failing = 450  # 450 pages of 1,000 characters of error: over 400 KB on its own
    for page in range(failing):
        kind = "EfficyUnavailable" if page % 3 else "ApsisUnavailable"
        fs.runs.page_failed("p17", run["run_id"], page, f"{kind}: " + "x" * 2000)

    fs.fail(run, {"Error": "States.ExceedToleratedFailureThreshold", "Cause": "too many pages failed"})

    ended = fs.runs.get("p17", run["run_id"])
    assert ended is not None and ended.status == "failed" and ended.report is not None
    assert len(json.dumps(ended.report)) < 20_000
    pages = ended.report["pages"]
    assert pages["failed_count"] == PAGES
    assert pages["failed_by_error"] == {"no result": PAGES - failing, "EfficyUnavailable": 300, "ApsisUnavailable": 150}
    assert [p["page"] for p in pages["failed"]] == list(range(20))  # those with an error come first
    assert all(len(p["error"]) <= 300 for p in pages["failed"])
    assert pages["unreported"] == {"count": PAGES - failing, "ranges": [f"{failing}-{PAGES - 1}"]}
    lines = render_report(current_report(ended))
    assert f"  pages: 0/{PAGES} done, {PAGES} failed" in lines
    assert "  failed pages by error: no result 9,550, EfficyUnavailable 300, ApsisUnavailable 150" in lines
    assert f"  9,550 pages without a result: {failing}-{PAGES - 1}" in lines
