"""An import report APSIS gives in another shape than the assumed `report` object (contracts/apsis-one.md §4:
its shape is not documented) is read where it is, or proves no row imported: the text of a CSV error report, a
list of errors, statistics nested in `statistics`, or statistics and errors beside the status. Each was read as
"no report", and a "completed" status then recorded every row of the file as imported, its opt-ins as sent,
the rows APSIS refused too. Real Collector, ImportWriter and PersonSyncer against the simulators; the
simulator applies only the file's first 30 rows, as each report says."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.integration.test_import_report_coverage import half_applied_run

REFUSED = [{"row": n, "message": "invalid value"} for n in range(31, 61)]


@pytest.mark.parametrize(
    "result",
    [
        {"status": "completed", "report": "row,message\n" + "".join(f"{n},invalid value\n" for n in range(31, 61))},
        {"status": "completed", "report": REFUSED},
        {"status": "completed", "report": {"statistics": {"rows": 60, "created": 30, "updated": 0, "failed": 0}}},
        {"status": "completed", "report": {"stats": {"rows": 30}}},
        {"status": "completed", "rows": 60, "created": 30, "updated": 0, "failed": 30},
        {"status": "completed", "statistics": {"rows": 30, "created": 30}},
        {"status": "completed", "failed": 30, "errors": REFUSED[:5]},
    ],
    ids=["csv-text", "errors-list", "nested-counts", "nested-rows", "beside", "nested-beside", "errors-beside"],
)
def test_a_report_in_another_shape_never_records_a_refused_row_as_imported(
    world: dict[str, Any], result: dict[str, Any]
) -> None:
    recorded, in_apsis, _ = half_applied_run(world, result)
    missing = sorted(set(recorded) - set(in_apsis))
    assert not missing, f"{len(missing)} persons recorded as created (their opt-ins as sent) that APSIS does not hold"
    assert sorted(recorded) == list(range(1, 61))  # the refused rows went person by person
