"""The run report's "bulk imports: N file(s), M rows" (report.imports, from the counters `imports` and
`import_rows`) must say how many persons the imports wrote: not count a row APSIS refused (it was written person
by person, and is counted there too), nor count one person twice because their row went in two imports."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    collector,
    person,
    queue_pages,
    world,
)
from tests.memory_store import MemoryPersonStateStore


def _total(counted: list[Any]) -> Counter[str]:
    total: Counter[str] = Counter()
    for _, counters in counted:
        total.update(counters)
    return total


def test_rows_an_import_refused_are_not_counted_as_imported(world: dict[str, Any]) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    queued = queue_pages(world, states, pages=1, size=60)
    report = {"rows": 60, "created": 59, "failed": 1, "errors": [{"row": 20, "message": "invalid value"}]}
    world["apsis_sim"].add_fault(
        path_regex=r"/imports/[^/]+$", method="GET", status=200, content_type="application/json", count=1,
        body=json.dumps({"result": {"status": "completed", "report": report}}),
    )  # fmt: skip
    counted: list[Any] = []
    collector(world, states, rows=100, counted=counted).run(queued, {})
    total = _total(counted)
    # rows 19, 20, 21 went person by person (and are counted as created there)
    assert total["created"] == 60
    assert total["import_rows"] == 57, f"report says {total['import_rows']} rows imported; 3 of them were not"


def test_a_person_in_two_imports_of_one_file_is_one_row(world: dict[str, Any]) -> None:
    world["efficy_sim"].upsert_persons([person(k, [12]) for k in range(1, 61)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=60), {})
    # everyone changes their first name AND leaves the newsletter profile: one file, two imports
    world["efficy_sim"].upsert_persons([{**person(k, []), "FIRSTNAME": f"G{k}"} for k in range(1, 61)])
    counted: list[Any] = []
    collector(world, states, rows=100, counted=counted).run(queue_pages(world, states, pages=1, size=60), {})
    total = _total(counted)
    assert total["updated"] == 60 and total["import_files_done"] == 1
    # report.imports.files counts import requests by design (tests/e2e/test_full_sync.py); rows are persons
    assert total["import_rows"] == 60, (
        f"report says {total['imports']} file(s), {total['import_rows']} rows for 60 persons in one file"
    )
