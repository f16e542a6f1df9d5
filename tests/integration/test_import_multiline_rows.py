"""import_report.failed_rows maps a failed row number N to the rows N-1..N+1, so that "whichever [numbering APSIS]
meant, the failed person is among them": the data row from 1, from 0, or the file's line with the header as line
1. The last held only while each row was one line: a value with line breaks (a multi-line address, a note) is
written as a quoted multi-line cell, and every row after it sits on a later line. An APSIS numbering by file
line then named a line whose neighbours were other persons: the refused person was recorded as synced (state
written, never re-sent). The writer now gives the line each row starts on, and a line names its row."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from efficy_sync.fullsync.collect import Collector, QueuedPage
from efficy_sync.fullsync.page import sync_page
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_import_layout import CFG, CRM, person, world  # noqa: F401  (world: fixture)
from tests.memory_store import MemoryPersonStateStore

REFUSED = 10
REPORTED: list[dict[str, Any]] = []  # what the patched import answered


def _by_file_line(self: ApsisSimulator, job: Any, data: bytes) -> None:
    """The simulator's import, except that APSIS refuses one row (person REFUSED's) and names it by its line in
    the file, header = line 1 (one of the numberings import_report.failed_rows says it covers)."""
    with self._lock:
        job.status = "in_progress"
        reader = csv.DictReader(io.StringIO(data.decode("utf-8")))
        rows: list[dict[str, Any]] = []
        errors = []
        start = 2
        for row in reader:
            if row["profile_key"] == str(REFUSED):
                errors.append({"row": start, "message": "refused"})
            else:
                rows.append(row)
            start = reader.line_num + 1
        report = job.plan.apply(rows, self)
        report.update(rows=len(rows) + len(errors), failed=len(errors), errors=errors)
        REPORTED.append(report)
        job.report, job.status, job.ended_at = report, "completed", self.clock()


def test_a_row_refused_after_a_multi_line_value_is_not_recorded_as_synced(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = CFG
    REPORTED.clear()
    monkeypatch.setattr(ApsisSimulator, "_run_import", _by_file_line)
    persons = [person(k, [12]) for k in range(1, 41)]
    persons[1]["FIRSTNAME"] = "Anne\nMarie\nSophie\nLouise"  # a value with line breaks (four lines in the file)
    world["efficy_sim"].upsert_persons(persons)
    states = MemoryPersonStateStore()
    queued: list[QueuedPage] = []
    sync_page(
        cfg, {"page": 0, "first": 0, "pages": 1, "page_size": 100, "tail": True},
        efficy=world["efficy"], apsis=world["apsis"], states=states, dry_run=False, write_mode="import",
        max_concurrency=5, queue=lambda ep, size, keys: queued.append(QueuedPage(0, ep, size, tuple(keys))),
    )  # fmt: skip
    Collector(
        cfg, efficy=world["efficy"], apsis=world["apsis"], states=states,
        syncer=PersonSyncer(cfg, world["apsis"], states, dry_run=False, email_lookup=lambda a: []),
        import_rows=1000, on_counters=lambda token, counters: None, poll_interval=0.01,
    ).run(queued, {})  # fmt: skip

    (report,) = REPORTED
    assert report["errors"] == [{"row": 14, "message": "refused"}]  # line 14: header + 9 rows, one of 4 lines
    state = states.get(cfg.integration_id, REFUSED)
    profile = world["apsis_sim"].get_profile(CRM, str(REFUSED))
    # the refused person goes person by person (import_writer: "rows an import reports as failed ... go person
    # by person"), so APSIS One holds them at the end of the run
    assert profile is not None, f"person {REFUSED} refused by the import, state stored as {state.last_outcome!r}"


def test_a_file_line_names_the_row_that_spans_it() -> None:
    from efficy_sync.fullsync.import_report import failed_rows

    keys = [101, 102, 103, 104, 105]
    lines = [2, 3, 7, 8, 9]  # row 2 spans lines 3 to 6 (a value with three line breaks)
    report = {"rows": 5, "created": 4, "failed": 1, "errors": [{"row": 7, "message": "refused"}]}
    assert failed_rows(report, keys, lines) == {103, 104}  # line 7 is row 3's (line 8, from 0: row 4's)
    assert failed_rows(report, keys) == set(keys)  # a number past the rows, without the lines: all, to be safe
    single = {"rows": 5, "created": 4, "failed": 1, "errors": [{"row": 3, "message": "refused"}]}
    assert failed_rows(single, keys, None) == {102, 103, 104}  # one line per row: as before
