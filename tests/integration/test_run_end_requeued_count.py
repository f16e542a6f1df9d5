"""The report's `requeued` counts every parked person re-sent, also when a re-enqueue failed partway.

ParkingLot.drain sends and forgets 500 persons at a time but returned its total only at the end, and the run
counted `requeued` only once the drain returned: when a later chunk raised, the persons the chunks before it had
re-sent were never counted. A Finish whose drain failed so also ended the run `failed` through the Catch,
though every page had succeeded. Now each chunk is counted on the run as soon as it is sent; the run ends
`succeeded` (its sync is done) with the persons left parked in its report, and what the sweeper re-sends
afterwards is added to the count its report shows.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from efficy_sync.fullsync import parking as parking_mod
from efficy_sync.fullsync.parking import ParkingLot
from efficy_sync.fullsync.report import current_report
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

PARKED = 503  # more than one drain chunk (500)


@pytest.fixture
def world(in_process_aws: str, sim: EfficySimulator, apsis_sim: ApsisSimulator) -> World:
    return World(in_process_aws, sim, apsis_sim, raw_config())


def second_chunk_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = parking_mod.enqueue_changes
    calls = {"n": 0}

    def flaky(queue_url: str, changes: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # the second chunk: SQS throttles past boto3's retries
            raise EnqueueError("SQS refused a batch of 3 messages (ThrottlingException)")
        return real(queue_url, changes, **kw)

    monkeypatch.setattr(parking_mod, "enqueue_changes", flaky)


def on_queue(queue_url: str) -> int:
    attrs = boto3.client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"]["ApproximateNumberOfMessages"])


def test_the_drain_reports_each_chunk_sent_before_a_later_one_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = world.fs
    run = fs.begin({"integration_id": "p17"}, f"{ARN}q0")
    for key in range(1000, 1000 + PARKED):
        assert fs.parking.park("p17", key, run["run_id"])
    fs.runs.release("p17", f"{ARN}q0")
    second_chunk_refused(monkeypatch)
    sent: list[int] = []

    with pytest.raises(EnqueueError):
        ParkingLot("state", fs.runs).drain("p17", fs.queue_url, on_sent=sent.append)

    assert sent == [500] and on_queue(fs.queue_url) == 500
    assert fs.parking.count("p17") == PARKED - 500


def test_requeued_counts_every_parked_person_re_sent(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    world.efficy_sim.upsert_persons([person(k) for k in range(1, 11)])
    fs = world.fs
    run = fs.begin({"integration_id": "p17"}, f"{ARN}q1")
    planned = fs.plan(run)
    for descriptor in fs.plans.get(planned.key) or []:
        fs.page({**run, "page": descriptor})
    for key in range(1000, 1000 + PARKED):
        assert fs.parking.park("p17", key, run["run_id"])
    real = parking_mod.enqueue_changes
    second_chunk_refused(monkeypatch)

    report = fs.finish(run, None)  # every page done: the run succeeds, 3 persons left parked

    assert report["status"] == "succeeded"
    assert (report["deferred"]["requeued"], report["deferred"]["left_parked"]) == (500, PARKED - 500)
    assert fs.parking.count("p17") == PARKED - 500
    monkeypatch.setattr(parking_mod, "enqueue_changes", real)
    fs.execution_status = lambda arn: "SUCCEEDED"
    assert sweep(fs)["requeued"] == PARKED - 500  # the sweeper re-sends the rest
    assert fs.parking.count("p17") == 0 and on_queue(fs.queue_url) == PARKED
    ended = fs.runs.get("p17", run["run_id"])
    assert ended is not None and ended.status == "succeeded"
    deferred = current_report(ended)["deferred"]
    assert (deferred["requeued"], deferred["left_parked"]) == (PARKED, 0), deferred
