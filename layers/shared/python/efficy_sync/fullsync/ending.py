"""How a run ends (Finish, Fail, Halt, the clean-up of an ended execution, the sweeper): the lock released, the
parked changes re-sent, the end recorded with its report.

The end is recorded whatever the re-send does. Ending used to release, drain the parking lot and only then end
the run, so an SQS outage during the drain raised before the run was ended, and nothing came back for it (the
Fail step does not retry EnqueueError, and the sweeper only drained a released lock): the run stayed RUNNING for
good. Now a drain that fails leaves its keys parked (a key is forgotten only once it is on the queue, so none is
lost), the report says how many are left and why, and the sweeper re-sends them within 5 minutes. Release still
comes before the drain (parking.py: that order closes the race with a change parked at the end).

What a drain re-sends is counted chunk by chunk as it goes: counting the total once the drain returned lost the
chunks already sent when a later one failed, and the report under-counted `requeued`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..observability import logger  # the PII-scrubbing logger: one logging path
from .report import build_report, left_parked
from .runs import Lock, Run, RunStore, utc_now

if TYPE_CHECKING:
    from .lifecycle import FullSync


@dataclass(frozen=True)
class Drained:
    """What one drain of an integration's parking lot did."""

    requeued: int = 0
    #: persons still parked after a drain that failed (error says why); the sweeper re-sends them
    left: int = 0
    error: str = ""

    def noted(self, report: dict[str, Any]) -> dict[str, Any]:
        """The report, saying how many persons a failed drain left parked."""
        if self.error:
            left_parked(report.setdefault("deferred", {}), self.left, self.error)
        return report


def release_and_drain(fs: FullSync, run: Run) -> Drained:
    """The run's lock released, then its parked changes re-sent (never raises for the re-send: see above)."""
    fs.runs.release(run.integration_id, run.execution_arn)
    return drain(fs, run.integration_id, run.run_id)


def drain(fs: FullSync, integration_id: str, run_id: str) -> Drained:
    """Re-send the integration's parked changes, counting each chunk on the run (`requeued`) once it is sent. A
    failure is logged and answered, not raised: the keys not sent stay parked for the sweeper, and the run's end
    must not wait for SQS."""
    sent = 0

    def counted(n: int) -> None:
        nonlocal sent
        sent += n
        if run_id:
            fs.runs.add(integration_id, run_id, {"requeued": n})

    try:
        fs.parking.drain(integration_id, fs.queue_url, on_sent=counted)
    except Exception as exc:  # SQS refused or unreachable, mostly: nothing was forgotten that was not sent
        error = f"{type(exc).__name__}: {exc}"[:300]
        left = fs.parking.count(integration_id)
        logger.warning(
            "re-enqueue of parked changes failed; they stay parked and the sweeper re-sends them",
            extra={"integration_id": integration_id, "run_id": run_id, "left_parked": left, "error": error},
        )
        return Drained(sent, left, error)
    return Drained(sent)


def end_execution(fs: FullSync, lock: Lock, status: str, error: Mapping[str, Any] | None) -> int:
    """The clean-up of a run whose execution ended (EventBridge, the sweeper, a Begin taking over a stale lock, a
    cancel): the lock released, parked changes re-sent, the run ended `status` unless it already ended. Returns
    the persons re-sent."""
    fs.runs.release(lock.integration_id, lock.execution_arn)
    run = fs.runs.get(lock.integration_id, lock.run_id) if lock.run_id else None
    drained = drain(fs, lock.integration_id, run.run_id if run is not None else "")
    if run is None:
        return drained.requeued
    run = fs.runs.get(run.integration_id, run.run_id) or run
    if run.active:
        report = drained.noted(
            build_report(run, status=status, failed_pages=failed_pages(fs.runs, run), ended_at=utc_now())
        )
        if error:
            report["error"] = dict(error)
        fs.runs.end(run.integration_id, run.run_id, status, error=error, report=report)
    return drained.requeued


def failed_pages(runs: RunStore, run: Run) -> list[dict[str, Any]]:
    """Every page of the run not counted as done, in page order, with its attempts and last error (the report
    keeps a bounded summary of them: failed_pages.py)."""
    records = runs.pages(run.integration_id, run.run_id)
    failed = []
    for number in range(run.pages_total or 0):
        if number in run.pages_counted:
            continue
        record = records.get(number)
        failed.append(
            {
                "page": number,
                "attempts": record.attempts if record else 0,
                "error": (record.last_error if record else None) or "no result",
            }
        )
    return failed
