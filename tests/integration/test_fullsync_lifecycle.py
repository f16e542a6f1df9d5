"""The steps' bookkeeping (moto in-process): failed pages reported or failing the run, fail, cleanup, sweeper.

The page work itself runs on the local stack (tests/e2e/test_full_sync.py); here the pages' records are
written directly, to reach what a local run cannot: a page that keeps failing after every retry (moto's
Distributed Map ignores tolerated-failure thresholds, so Finish enforces the threshold itself).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from efficy_sync.config import load_config_file
from efficy_sync.fullsync.lifecycle import FullSync, TooManyPagesFailed
from efficy_sync.fullsync.parking import ParkingLot
from efficy_sync.fullsync.report import current_report, render_report
from efficy_sync.fullsync.runs import RunStore
from efficy_sync.fullsync.sweep import sweep
from efficy_sync.fullsync.tags import QueryMembers
from efficy_sync.fullsync.wiring import S3Plans
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.store.removals import HeldRemovals, RemovalBreaker
from efficy_sync.store.run_records import SyncAlreadyRunning

from tests.support import create_pk_sk_table

ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:states:eu-west-1:123456789012:execution:full-sync:"


def _no_client(cfg: Any) -> Any:
    raise AssertionError("these steps' bookkeeping calls neither Efficy nor APSIS One")


def _table(name: str) -> None:
    create_pk_sk_table(name)


@pytest.fixture
def sync(in_process_aws: str) -> Iterator[tuple[FullSync, dict[str, str]]]:
    _table("config")
    _table("state")
    queue = boto3.client("sqs").create_queue(QueueName="c.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    ConfigStore("config").put(load_config_file(ROOT / "examples" / "demo.yaml"), applied_by="test")
    statuses: dict[str, str] = {}
    runs = RunStore("state")
    full_sync = FullSync(
        configs=ConfigStore("config"),
        runs=runs,
        parking=ParkingLot("state", runs),
        states=PersonStateStore("state"),
        members=QueryMembers("state"),
        queue_url=queue,
        plans=S3Plans("unused"),
        execution_status=lambda arn: statuses.get(arn, "RUNNING"),
        efficy_for=_no_client,
        apsis_for=_no_client,
        held=HeldRemovals("state"),
        removal_breaker=RemovalBreaker("state"),
    )
    yield full_sync, statuses


def planned(full_sync: FullSync, arn: str, pages: int, done: int, failing: list[int]) -> dict[str, Any]:
    run = full_sync.begin({"integration_id": "demo"}, arn)
    stored = full_sync.runs.get("demo", run["run_id"])
    full_sync.runs.set_plan(stored, pages_total=pages, persons_estimate=pages * 100, plan_key="k")
    for page in range(done):
        full_sync.runs.page_done("demo", run["run_id"], page, 100, {"persons": 100, "created": 100})
    for page in failing:
        for attempt in range(6):
            full_sync.runs.page_failed("demo", run["run_id"], page, f"EfficyUnavailable: 504 (attempt {attempt + 1})")
    return run


def queued(sync_queue: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs")
    out = []
    while messages := sqs.receive_message(QueueUrl=sync_queue, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=sync_queue, ReceiptHandle=message["ReceiptHandle"])
    return out


def test_a_page_that_keeps_failing_is_reported_and_the_sync_still_succeeds(sync) -> None:
    full_sync, _ = sync
    run = planned(full_sync, ARN + "a", pages=20, done=19, failing=[19])
    full_sync.parking.park("demo", 42, run["run_id"])

    report = full_sync.finish(run, tags={"tags": {}})

    assert report["status"] == "succeeded"
    assert report["pages"]["failed"] == [{"page": 19, "attempts": 6, "error": "EfficyUnavailable: 504 (attempt 6)"}]
    assert report["persons"]["created"] == 1900
    assert report["deferred"] == {"messages": 1, "requeued": 1}
    assert [m["person_key"] for m in queued(full_sync.queue_url)] == [42]
    assert full_sync.runs.lock("demo").status == "released"
    assert full_sync.finish(run, tags={}) == report  # idempotent: Step Functions may retry it


def test_more_failed_pages_than_tolerated_fails_the_run_through_the_fail_step(sync) -> None:
    full_sync, _ = sync
    run = planned(full_sync, ARN + "b", pages=10, done=8, failing=[8])  # page 9 never reported at all
    with pytest.raises(TooManyPagesFailed, match="2 of 10 pages failed"):
        full_sync.finish(run, tags={})
    assert full_sync.runs.get("demo", run["run_id"]).active

    full_sync.fail(run, {"Error": "TooManyPagesFailed", "Cause": json.dumps({"errorMessage": "x"})})

    ended = full_sync.runs.get("demo", run["run_id"])
    assert ended.status == "failed" and ended.error["Error"] == "TooManyPagesFailed"
    assert [p["page"] for p in ended.report["pages"]["failed"]] == [8, 9]
    assert full_sync.runs.lock("demo").status == "released"


def test_cleanup_matches_the_run_by_execution_arn_and_marks_it_cancelled(sync) -> None:
    full_sync, _ = sync
    run = planned(full_sync, ARN + "c", pages=3, done=1, failing=[])
    full_sync.parking.park("demo", 7, run["run_id"])

    assert full_sync.execution_ended(ARN + "someone-else", "FAILED") == {"matched": False}
    assert full_sync.runs.get("demo", run["run_id"]).active
    result = full_sync.execution_ended(ARN + "c", "ABORTED")

    assert result["matched"] and result["requeued"] == 1
    ended = full_sync.runs.get("demo", run["run_id"])
    assert ended.status == "cancelled" and ended.report["status"] == "cancelled"
    assert full_sync.runs.lock("demo").status == "released"
    assert full_sync.execution_ended(ARN + "c", "ABORTED")["requeued"] == 0  # EventBridge may deliver twice


def test_a_cancelled_runs_report_counts_what_its_pages_did_after_it_ended(sync) -> None:
    """Pages syncing when the run is cancelled finish their chunk (page.py) and count it afterwards: the report
    read later counts every person they wrote; the snapshot taken at the end did not have them."""
    full_sync, _ = sync
    run = planned(full_sync, ARN + "cancel-late", pages=3, done=1, failing=[])
    full_sync.execution_ended(ARN + "cancel-late", "ABORTED")
    run_id = run["run_id"]
    full_sync.runs.page_done("demo", run_id, 1, 100, {"persons": 100, "created": 100})  # finished its page
    assert full_sync.runs.page_stopped("demo", run_id, 2, 48, {"persons": 48, "created": 40, "skipped": 8})
    assert not full_sync.runs.page_stopped("demo", run_id, 2, 48, {"persons": 48})  # counted once

    ended = full_sync.runs.get("demo", run_id)
    assert ended.report["persons"]["persons"] == 100  # the snapshot of the end
    report = current_report(ended)
    assert report["status"] == "cancelled" and report["ended_at"] == ended.report["ended_at"]
    assert report["persons"]["persons"] == 248 and report["persons"]["created"] == 240
    assert report["pages"] == {**ended.report["pages"], "done": 2}  # the stopped page counts, it is not done
    assert "  pages: 2/3 done, 1 not done" in render_report(report)  # done + not done = all of them
    assert full_sync.runs.pages("demo", run_id)[2].status == "stopped"


def test_a_run_is_active_until_it_ends_and_an_unknown_one_is_not(sync) -> None:
    full_sync, _ = sync
    run = planned(full_sync, ARN + "active", pages=1, done=0, failing=[])
    assert full_sync.runs.is_active("demo", run["run_id"])
    full_sync.execution_ended(ARN + "active", "ABORTED")
    assert not full_sync.runs.is_active("demo", run["run_id"])
    assert not full_sync.runs.is_active("demo", "no-such-run")


def test_a_finished_runs_report_is_its_snapshot(sync) -> None:
    full_sync, _ = sync
    run = planned(full_sync, ARN + "snap", pages=1, done=1, failing=[])
    full_sync.execution_ended(ARN + "snap", "FAILED")
    full_sync.runs.page_done("demo", run["run_id"], 5, 100, {"persons": 100})  # nothing adds after a failure
    ended = full_sync.runs.get("demo", run["run_id"])
    assert ended.status == "failed" and current_report(ended) == ended.report


def test_the_sweeper_ends_runs_whose_event_was_lost_and_requeues_late_parked_keys(sync) -> None:
    full_sync, statuses = sync
    run = planned(full_sync, ARN + "d", pages=2, done=2, failing=[])
    assert sweep(full_sync) == {"ended": [], "requeued": 0, "query_tags": {}}  # still running: left alone

    for status in ("PENDING_REDRIVE", "SOME_NEW_STATUS"):  # not ended: an admin's redrive may resume it
        statuses[ARN + "d"] = status
        assert sweep(full_sync)["ended"] == []
        assert full_sync.runs.get("demo", run["run_id"]).active
        with pytest.raises(SyncAlreadyRunning):
            full_sync.begin({"integration_id": "demo"}, ARN + "other")

    statuses[ARN + "d"] = "TIMED_OUT"
    assert sweep(full_sync)["ended"] == ["demo"]
    assert full_sync.runs.get("demo", run["run_id"]).status == "timed_out"

    # A key parked by a worker that read the lock just before the release (the race the sweeper covers):
    boto3.client("dynamodb").put_item(
        TableName="state",
        Item={"pk": {"S": "PARKED#demo"}, "sk": {"S": "77"}, "parked_at": {"S": "2026-01-01T00:00:00Z"}},
    )
    assert sweep(full_sync)["requeued"] == 1
    assert [m["person_key"] for m in queued(full_sync.queue_url)] == [77]


def test_begin_takes_over_a_lock_left_by_an_ended_execution(sync) -> None:
    full_sync, statuses = sync
    first = planned(full_sync, ARN + "e", pages=1, done=0, failing=[])
    statuses[ARN + "e"] = "FAILED"
    second = full_sync.begin({"integration_id": "demo", "dry_run": True}, ARN + "f")
    assert second["dry_run"] is True and second["run_id"] != first["run_id"]
    assert full_sync.runs.get("demo", first["run_id"]).status == "failed"
    assert full_sync.runs.lock("demo").execution_arn == ARN + "f"


@pytest.mark.parametrize(
    ("sync_input", "named"),
    [
        ({}, "integration_id is missing"),
        ({"integrationId": "demo"}, "'integrationId' (did you mean 'integration_id'?)"),
        ({"integration_id": ""}, "integration_id is '' is not an integration id"),
        ({"integration_id": "demo", "dry_run": "yes"}, "dry_run must be true or false"),
        ({"integration_id": "demo", "dryrun": True}, "unknown key(s) 'dryrun'"),
        (["demo"], "must be a JSON object"),
        ({"integration_id": "nobody"}, "integration_id 'nobody' has no config"),
    ],
)
def test_begin_names_what_is_wrong_with_its_input(
    sync: tuple[FullSync, dict[str, str]], sync_input: Any, named: str
) -> None:
    """An execution started by hand with a wrong input fails with a message naming the field, not a KeyError."""
    from efficy_sync.fullsync.lifecycle import InvalidSyncInput

    full_sync, _ = sync
    with pytest.raises(InvalidSyncInput) as raised:
        full_sync.begin(sync_input, ARN + "bad-input")
    assert named in str(raised.value)
    assert '{"integration_id": "acme-eu", "dry_run": false}' in str(raised.value) or "config" in str(raised.value)
    assert full_sync.runs.lock("demo") is None  # nothing taken


def test_begin_accepts_the_documented_input(sync: tuple[FullSync, dict[str, str]]) -> None:
    full_sync, _ = sync
    run = full_sync.begin({"integration_id": "demo", "dry_run": True}, ARN + "good")
    assert run["integration_id"] == "demo" and run["dry_run"] is True


def test_the_run_records_who_started_it(sync: tuple[FullSync, dict[str, str]]) -> None:
    """The CLI passes the caller's AWS identity; a direct start on Step Functions records the execution's name."""
    full_sync, _ = sync
    by_cli = full_sync.begin(
        {"integration_id": "demo", "dry_run": False, "started_by": "arn:aws:iam::123456789012:user/alice"},
        ARN + "from-cli",
    )
    stored = full_sync.runs.get("demo", by_cli["run_id"])
    assert (stored.started_by, stored.started_via) == ("arn:aws:iam::123456789012:user/alice", "cli")
    full_sync.runs.release("demo", ARN + "from-cli")
    direct = full_sync.begin({"integration_id": "demo", "dry_run": False}, ARN + "demo-1767225600")
    stored = full_sync.runs.get("demo", direct["run_id"])
    assert (stored.started_by, stored.started_via) == ("demo-1767225600", "stepfunctions")
    assert stored.config_version == 1


def test_the_sweeper_reads_only_scheduled_configs_and_one_that_no_longer_loads_fails_alone(sync) -> None:
    """The sweep reads every live config in one Scan and validates only those with a scheduled query tag."""
    full_sync, _ = sync
    demo = full_sync.configs.get("demo")  # no schedule: never validated, never in the report
    queries = [demo.tags.queries[0].model_copy(update={"schedule": "rate(1 day)"})]
    scheduled = demo.model_copy(
        update={"integration_id": "nightly", "tags": demo.tags.model_copy(update={"queries": queries})}
    )
    full_sync.configs.put(scheduled, applied_by="test")
    broken = {"integration_id": "broken", "tags": {"queries": [{"query": 7, "tag": "x", "schedule": "rate(1 day)"}]}}
    boto3.client("dynamodb").put_item(  # a config a newer version wrote, which this code cannot load
        TableName="config",
        Item={"pk": {"S": "CONFIG#broken"}, "sk": {"S": "CURRENT"}, "body": {"S": json.dumps(broken)}},
    )

    boto3.client("dynamodb").put_item(  # a body cut short: unreadable, reported alone too
        TableName="config",
        Item={"pk": {"S": "CONFIG#garbled"}, "sk": {"S": "CURRENT"}, "body": {"S": '{"tags": {"queries": ['}},
    )

    assert list(full_sync.configs.scheduled()) == ["broken", "garbled", "nightly"]
    tags = sweep(full_sync)["query_tags"]
    assert set(tags) == {"broken", "garbled", "nightly"}
    # the store's own error, naming the integration (pydantic's and json's told neither)
    assert tags["broken"]["error"].startswith("UnreadableConfig: broken (its live version) cannot be read")
    assert tags["garbled"]["error"].startswith("UnreadableConfig: garbled (its live version) cannot be read")
    assert "not JSON" in tags["garbled"]["error"]
    # nightly was due and loaded: the mirror reached for its Efficy client (which this fixture refuses)
    assert "calls neither Efficy nor APSIS One" in tags["nightly"]["error"]
