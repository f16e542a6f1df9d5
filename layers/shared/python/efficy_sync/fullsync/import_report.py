"""What an APSIS import's status and report prove about the rows of its file (import_writer.py sends them).

A row is recorded as imported only on the report's word. Its shape is not documented (contracts/apsis-one.md §4:
`{"rows", "created", "updated", "failed", "errors": [{"row", "message"}]}` is assumed), so every way it can fail
to account for a row sends every row of the file person by person, which re-plans from the stored state:
sending an imported person once more repeats the same values, while recording one APSIS never applied leaves
them out of APSIS (and an opt-in the file carried unknown to every later sync).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from ..values import whole_number

#: import statuses that end the wait (contracts/apsis-one.md §4), compared in lower case
IMPORT_COMPLETED = frozenset({"completed", "completed_with_errors"})
IMPORT_FAILED = frozenset({"error", "failed"})
#: the statuses of an import still running: the documented ones (contracts/apsis-one.md §4; APSIS's own Magento
#: module waits on exactly these). Any other status ends the wait: one we cannot read ("success", "done",
#: "partially_completed") was polled as still running until the wait's timeout, which failed the Imports step,
#: and every retry of it the same way, until the run failed
IMPORT_PENDING = frozenset({"waiting_for_file", "queued", "in_progress"})

#: members of a status answer that are the import's own, never part of its report
_NOT_REPORT = frozenset({"status", "report", "import_id"})
#: where a report may nest its statistics (its shape is not documented: contracts/apsis-one.md §4)
_STATISTICS = ("statistics", "stats")

#: where a report may give its failed count (its shape is not documented: contracts/apsis-one.md §4)
_FAILED_COUNTS = (("failed",), ("failed_count",), ("failedCount",), ("statistics", "failed"), ("stats", "failed"))
#: the error members that may name the failed profile's key
_KEY_MEMBERS = ("profile_key", "key")


def report_of(result: dict[str, Any], import_id: Any, status: str) -> dict[str, Any]:
    """The report of an import's status answer (`result`), for failed_rows. Where APSIS gives it is not documented:
    in a `report` object, or beside the status (statistics and errors at the result's top level). A `report`
    that is not an object is read as its errors: a list of them is read as such, anything else (the text of a
    CSV error report, a link to one) accounts for no row, so every row of the file goes person by person. Read
    as "no report", such an answer recorded every row as imported, the ones its CSV named as failed too. A
    status inside the report never overrides the import's own."""
    beside = {name: value for name, value in result.items() if name not in _NOT_REPORT}
    given = result.get("report")
    if given is None:
        own: dict[str, Any] = {}
    elif isinstance(given, dict):
        own = given
    else:
        own = {"errors": given}
    return {**beside, **own, "import_id": import_id, "status": status}


def failed_rows(report: dict[str, Any], keys: Sequence[int], lines: Sequence[int] | None = None) -> set[int]:
    """The keys of the rows APSIS reports failed (`errors[].row`, or the key an error names). Every row of the
    file when the report cannot say which: an error without a readable row or key, a key not in the file,
    fewer rows named than its `failed` count (the details may be only in a downloadable error report), a status
    other than "completed" that names none, or a report that accounts for fewer rows than the file had (`rows`,
    or created + updated + failed: the rows it leaves out were not imported on its word).

    How APSIS numbers a row is not documented: the data row from 1 (our simulator), the file's line with the
    header as line 1, or an index from 0. So a number N fails the rows N-1, N and N+1 (from 1): whichever it
    meant, the failed person is among them, and sending a neighbour that was imported once more per person is
    only a repeat of the same values, never a person recorded as synced that APSIS refused. `lines`: the file
    line each row starts on (header = line 1), when a value's line breaks make rows span several lines: a file
    line then names the row that spans it (and the one spanning the next line, for a count from 0); by the row
    neighbours alone, a person refused after a multi-line address was recorded as synced."""
    everyone = set(keys)
    errors = report.get("errors") or []
    if not isinstance(errors, list) or _short(report, len(keys)):
        return everyone
    named: set[int] = set()
    by_key: set[int] = set()
    for error in errors:
        given = next((error[m] for m in _KEY_MEMBERS if isinstance(error, dict) and error.get(m) is not None), None)
        if given is not None:
            key = whole_number(given)
            if key is None or key not in everyone:
                return everyone  # a report about another file than the one we read it for
            by_key.add(key)
            continue
        number = error.get("row") if isinstance(error, dict) else None
        if isinstance(number, str) and number.isdigit():
            number = int(number)
        last_line = max(len(keys) + 1, (lines[-1] if lines else 0) + 1)  # a line count may pass the row count
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number <= last_line:
            return everyone
        if number == 0:  # the first row from 0, or (as our simulator assumes) the whole file: it may be all of them
            return everyone
        named.add(number)
    counts = _failed_counts(report)
    if counts is None:
        return everyone
    count = max(counts, default=None)
    if count is not None and count > len(named) + len(by_key):
        return everyone
    # a status that says some rows failed ("completed_with_errors"), with neither rows named nor a failed count
    # of 0 (a report of statistics only, or none): which rows is unknown, so all of them
    status = str(report.get("status") or "completed").lower()
    if status != "completed" and not named and not by_key and count != 0:
        return everyone
    rows = {n for number in named for n in (number - 1, number, number + 1) if 1 <= n <= len(keys)}
    if lines:
        rows |= {i + 1 for number in named for line in (number, number + 1) if (i := _spanning(lines, line)) >= 0}
    return by_key | {keys[n - 1] for n in rows if 1 <= n <= len(keys)}


def _spanning(lines: Sequence[int], line: int) -> int:
    """The index of the row whose lines include `line` (rows start at `lines`, in order); -1 for the header."""
    return bisect_right(lines, line) - 1


def _short(report: dict[str, Any], sent: int) -> bool:
    """Whether the report accounts for fewer rows than the file had: its `rows`, or its created + updated +
    failed when it gives all three (a count it does not give, or cannot be read, proves nothing either way),
    at its top level or in its statistics (where failed_rows reads a failed count too)."""
    nested = [value for name in _STATISTICS if isinstance(value := report.get(name), dict)]
    return any(_short_counts(counts, sent) for counts in (report, *nested))


def _short_counts(report: dict[str, Any], sent: int) -> bool:
    rows = _number(report.get("rows"))
    if rows is not None and rows < sent:
        return True
    parts = [_number(report.get(name)) for name in ("created", "updated", "failed")]
    return all(p is not None for p in parts) and sum(p for p in parts if p is not None) < sent


def _number(value: Any) -> int | None:
    return None if value is None or isinstance(value, bool) else whole_number(value)


def _failed_counts(report: dict[str, Any]) -> list[int] | None:
    """Every failed count the report gives, read as a whole number wherever it is ("3", 3.0, nested in
    statistics); None when one is there but unreadable (then which rows failed is unknown)."""
    counts: list[int] = []
    for path in _FAILED_COUNTS:
        value: Any = report
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        number = None if isinstance(value, bool) else whole_number(value)
        if number is None:
            return None
        counts.append(number)
    return counts
