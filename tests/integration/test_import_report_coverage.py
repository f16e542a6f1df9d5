"""An import report that does not account for every row of the file is no positive evidence for the rows it
leaves out: they go person by person, never recorded as imported. And the import's own status wins over a
`status` inside its report. Real Collector, ImportWriter and PersonSyncer against the simulators (fixtures of
test_import_layout); the simulator applies only the first 30 rows of the file, as the report says.

A "completed" status with no report at all is still taken at its word (the report's shape is assumed,
contracts/apsis-one.md §4: requiring one would send every row person by person if APSIS gives it elsewhere)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.memory_store import MemoryPersonStateStore


def apsis_applies_first_rows(world: dict[str, Any], rows: int) -> None:
    """The APSIS simulator processes only the file's first `rows` data rows, whatever its report then says."""
    sim = world["apsis_sim"]
    real_run = sim._run_import
    sim._run_import = lambda job, data: real_run(job, b"\n".join(data.split(b"\n")[: rows + 1]) + b"\n")


def _report_once(world: dict[str, Any], result: dict[str, Any]) -> None:
    world["apsis_sim"].add_fault(
        path_regex=r"/imports/[^/]+$", method="GET", status=200, content_type="application/json", count=1,
        body=json.dumps({"result": result}),
    )  # fmt: skip


def half_applied_run(world: dict[str, Any], result: dict[str, Any]) -> tuple[list[int], list[int], list[Any]]:
    """60 persons with an opt-in through one import that APSIS really processes only the first 30 rows of (what
    the report's numbers say, or nothing else), its status answered once as `result`: (the persons whose state
    says they exist in APSIS, the persons APSIS holds, the collector's counters)."""
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    queued = queue_pages(world, states, pages=1, size=60)
    apsis_applies_first_rows(world, 30)
    sim = world["apsis_sim"]
    _report_once(world, result)
    counted: list[Any] = []
    collector(world, states, rows=100, counted=counted).run(queued, {})
    deadline = time.monotonic() + 10  # the simulator applies the file on a timer thread of its own
    while sim.imports()[0]["status"] != "completed" and time.monotonic() < deadline:
        time.sleep(0.05)
    in_apsis = [k for k in range(1, 61) if sim.get_profile("com.apsis1.keyspaces.crm-id", str(k))]
    recorded = [k for k, s in states.get_many(CFG.integration_id, range(1, 61)).items() if s.exists_in_apsis]
    return recorded, in_apsis, counted


@pytest.mark.parametrize(
    "result",
    [
        # APSIS says it processed 30 rows of the 60 sent, none failed: rows 31..60 are unaccounted for
        {"status": "completed", "report": {"rows": 30, "created": 30, "updated": 0, "failed": 0, "errors": []}},
        # created + updated + failed < rows: 30 rows neither created, updated nor failed
        {"status": "completed", "report": {"rows": 60, "created": 30, "updated": 0, "failed": 0, "errors": []}},
        # the outer status says rows failed; the report's own "status" field overwrites it when merged (_run)
        {"status": "completed_with_errors", "report": {"status": "completed", "rows": 60}},
    ],
    ids=["rows-short", "counts-short", "report-status-overrides"],
)
def test_rows_a_completed_report_does_not_account_for_are_not_recorded_as_imported(
    world: dict[str, Any], result: dict[str, Any]
) -> None:
    recorded, in_apsis, counted = half_applied_run(world, result)
    synced = sum(c.get("created", 0) + c.get("updated", 0) for _, c in counted)
    missing = sorted(set(recorded) - set(in_apsis))
    assert not missing, (
        f"{len(missing)} persons recorded as created in APSIS that it does not hold; report says {synced} synced"
    )
