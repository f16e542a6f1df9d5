"""A run ends even when SQS refuses the re-enqueue of its parked changes (fullsync/ending.py).

Ending released the lock, drained the parking lot and only then ended the run, so an SQS outage during the drain
raised before the run was ended: the Fail step does not retry EnqueueError, the clean-up Lambda's retries met
the same outage, and the sweeper, finding the lock released, only drained. The run stayed RUNNING for good (and
a Begin taking over a stale lock raised the same way). Now the end is recorded whatever the drain does; the keys
it could not send stay parked, the report says how many, and the sweeper re-sends them. The sweeper also ends a
run still RUNNING whose lock is released and whose execution has ended (an end cut off after the release).
"""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.fullsync import parking as parking_mod
from efficy_sync.fullsync.report import current_report, render_report
from efficy_sync.fullsync.sweep import sweep
from efficy_sync.queue import EnqueueError
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.fullsync_harness import (
    ARN,
    World,
    apsis_sim,  # noqa: F401  (fixtures)
    person,
    raw_config,
)

OUTAGE = "SQS refused a batch of 1 messages (ServiceUnavailable)"


@pytest.fixture
def world(in_process_aws: str, sim: EfficySimulator, apsis_sim: ApsisSimulator) -> World:
    world = World(in_process_aws, sim, apsis_sim, raw_config())
    world.efficy_sim.upsert_persons([person(k) for k in range(1, 11)])
    return world


def sqs_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> Any:
        raise EnqueueError(OUTAGE)

    monkeypatch.setattr(parking_mod, "enqueue_changes", down)


def test_the_fail_step_ends_the_run_during_an_sqs_outage_and_the_sweeper_re_sends_later(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = world.fs
    run = fs.begin({"integration_id": "p17"}, f"{ARN}z1")
    fs.plan(run)
    assert fs.parking.park("p17", 3, run["run_id"])
    real = parking_mod.enqueue_changes
    sqs_down(monkeypatch)

    fs.fail(run, {"Error": "EfficyUnavailable", "Cause": "504"})  # the Catch's FailRun: it no longer raises

    ended = fs.runs.get("p17", run["run_id"])
    assert ended is not None and ended.status == "failed" and ended.report is not None
    deferred = ended.report["deferred"]
    assert (deferred["requeued"], deferred["left_parked"]) == (0, 1), deferred
    assert "EnqueueError" in deferred["requeue_error"] and "sweeper re-sends" in deferred["note"]
    assert any("1 person left parked" in line for line in render_report(ended.report))
    assert fs.parking.count("p17") == 1  # never forgotten unsent
    # EventBridge's clean-up of the FAILED execution meets the same outage: it answers, the run stays failed
    assert fs.execution_ended(f"{ARN}z1", "FAILED")["requeued"] == 0
    assert fs.runs.get("p17", run["run_id"]).status == "failed"  # type: ignore[union-attr]

    fs.execution_status = lambda arn: "FAILED"
    assert sweep(fs)["left_parked"] == {"p17": 1}  # still down: the sweep says so and does not raise
    monkeypatch.setattr(parking_mod, "enqueue_changes", real)  # SQS is back; the 5-minute sweeper comes round
    assert sweep(fs)["requeued"] == 1
    assert fs.parking.count("p17") == 0
    later = current_report(fs.runs.get("p17", run["run_id"]))
    assert (later["deferred"]["requeued"], later["deferred"]["left_parked"]) == (1, 0), later["deferred"]


def test_a_cancel_ends_the_run_during_an_sqs_outage(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = world.fs
    run = fs.begin({"integration_id": "p17"}, f"{ARN}z2")
    fs.plan(run)
    assert fs.parking.park("p17", 4, run["run_id"])
    sqs_down(monkeypatch)

    out = fs.execution_ended(f"{ARN}z2", "ABORTED")  # `full-sync cancel` runs the clean-up itself

    assert out["matched"] and out["requeued"] == 0
    ended = fs.runs.get("p17", run["run_id"])
    assert ended is not None and ended.status == "cancelled"
    assert ended.report is not None and ended.report["deferred"]["left_parked"] == 1
    assert fs.parking.count("p17") == 1


def test_begin_takes_over_a_stale_lock_during_an_sqs_outage(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = world.fs
    old = fs.begin({"integration_id": "p17"}, f"{ARN}z3")
    assert fs.parking.park("p17", 5, old["run_id"])
    fs.execution_status = lambda arn: "FAILED" if arn == f"{ARN}z3" else "RUNNING"
    sqs_down(monkeypatch)

    new = fs.begin({"integration_id": "p17"}, f"{ARN}z4")

    stale = fs.runs.get("p17", old["run_id"])
    assert stale is not None and stale.status == "failed"
    assert fs.runs.lock("p17").run_id == new["run_id"]  # type: ignore[union-attr]
    assert fs.parking.count("p17") == 1  # re-sent by the new run's end (or the sweeper's once it is released)


def test_the_sweeper_ends_a_run_whose_end_was_cut_off_after_the_release(world: World) -> None:
    fs = world.fs
    run = fs.begin({"integration_id": "p17"}, f"{ARN}z5")
    assert fs.parking.park("p17", 6, run["run_id"])
    fs.runs.release("p17", f"{ARN}z5")  # the Fail step released the lock, then its Lambda died
    fs.execution_status = lambda arn: "RUNNING"
    first = sweep(fs)  # the execution still runs (its Fail step may yet end the run): only drained
    assert (first["ended"], first["requeued"]) == ([], 1)
    assert fs.runs.is_active("p17", run["run_id"])
    fs.execution_status = lambda arn: "FAILED"

    out = sweep(fs)

    assert out["ended"] == ["p17"]
    ended = fs.runs.get("p17", run["run_id"])
    assert ended is not None and ended.status == "failed"
    assert ended.report is not None and ended.report["deferred"]["requeued"] == 1
    assert sweep(fs)["ended"] == []  # once
