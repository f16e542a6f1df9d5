"""An import that ends in a status of no known meaning ("success", "done", "partially_completed": only
waiting_for_file, queued, in_progress, completed and error are documented, contracts/apsis-one.md §4) ends the
wait at once and sends its rows person by person, counted in the run report. It was polled as still running
until the wait's timeout (10 minutes), which failed the Imports step; a file of persons without consents was
imported again by every retry, ending the same way, until the run failed. Real Collector, ImportWriter and
PersonSyncer against the simulators (fixtures of test_import_layout)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from efficy_sync.fullsync.collect import read_file_persons

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.memory_store import MemoryPersonStateStore


@pytest.mark.parametrize("status", ["success", "done", "partially_completed"])
@pytest.mark.parametrize("consents", [[12], []], ids=["opt-ins", "attributes-only"])
def test_an_import_in_an_unknown_status_sends_its_rows_person_by_person(
    world: dict[str, Any], status: str, consents: list[int]
) -> None:
    world["efficy_sim"].upsert_persons([person(k, consents) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    queued = queue_pages(world, states, pages=1, size=60)
    world["apsis_sim"].add_fault(
        path_regex=r"/imports/[^/]+$", method="GET", status=200, content_type="application/json",
        body=json.dumps({"result": {"status": status, "report": {"rows": 60, "failed": 0}}}),
    )  # fmt: skip
    counted: list[Any] = []

    # a wait far shorter than the test would take were the status polled as "still running"
    collector(world, states, rows=100, counted=counted)._file(
        "f", read_file_persons(CFG, world["efficy"], queued), {}, timeout=30
    )

    total = sum((Counter(c) for _, c in counted), Counter())
    assert total["import_unreadable"] == 1
    assert total["import_polls"] == 1  # the first answer ended the wait
    stored = states.get_many(CFG.integration_id, range(1, 61))
    assert all(stored[k].exists_in_apsis for k in range(1, 61))  # each sent and confirmed person by person
    held = [k for k in range(1, 61) if world["apsis_sim"].get_profile("com.apsis1.keyspaces.crm-id", str(k))]
    assert held == list(range(1, 61))


def test_the_run_report_says_how_many_imports_ended_in_an_unknown_status() -> None:
    """The count alone sat in the report's JSON: `full-sync report` printed nothing about it."""
    from efficy_sync.fullsync.report import render_report

    report = {
        "integration_id": "acme", "run_id": "r1", "status": "succeeded",
        "persons": {"created": 60}, "imports": {"files": 2, "rows": 60, "unreadable": 1},
    }  # fmt: skip
    text = "\n".join(render_report(report))
    assert "1 import ended in a status of no known meaning" in text
    assert "no known meaning" not in "\n".join(render_report({**report, "imports": {"files": 2, "rows": 60}}))
