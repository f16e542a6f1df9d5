"""The full-sync lock, run counters and parking, against moto's DynamoDB and SQS (in-process)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from efficy_sync.fullsync.parking import ParkingLot
from efficy_sync.fullsync.runs import RunStore, SyncAlreadyRunning

from tests.support import create_pk_sk_table

REGION = "eu-west-1"
TABLE = "state"
ARN = "arn:aws:states:eu-west-1:123456789012:execution:full-sync:"


@pytest.fixture
def aws_env(in_process_aws: str) -> dict[str, Any]:
    create_pk_sk_table(TABLE, REGION)
    queue = boto3.client("sqs", region_name=REGION).create_queue(
        QueueName="changes.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    return {"queue": queue}


def begin(
    store: RunStore,
    arn: str,
    statuses: dict[str, str | None] | None = None,
    ended: list | None = None,
    dry_run: bool = False,
):
    return store.begin(
        "acme",
        arn,
        dry_run=dry_run,
        config_version=3,
        write_mode="diff",
        max_concurrency=5,
        holder_status=lambda holder: (statuses or {}).get(holder, "RUNNING"),
        end_stale=lambda lock, status: (ended if ended is not None else []).append((lock, status)),
    )


def received(queue: str) -> list[dict[str, Any]]:
    sqs = boto3.client("sqs", region_name=REGION)
    bodies = []
    while True:
        messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return bodies
        for message in messages:
            bodies.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])


def test_begin_takes_the_lock_and_a_retry_of_the_same_execution_gets_the_same_run(aws_env) -> None:
    store = RunStore(TABLE)
    first = begin(store, ARN + "one")
    again = begin(store, ARN + "one")
    assert again.run_id == first.run_id
    lock = store.lock("acme")
    assert lock is not None and lock.held and lock.execution_arn == ARN + "one"
    assert store.latest("acme").run_id == first.run_id
    assert first.step_payload()["config_version"] == 3


def test_a_second_execution_is_refused_while_the_holder_runs(aws_env) -> None:
    store = RunStore(TABLE)
    first = begin(store, ARN + "one")
    with pytest.raises(SyncAlreadyRunning, match="already running") as refused:
        begin(store, ARN + "two")
    assert first.run_id in str(refused.value)
    assert store.lock("acme").execution_arn == ARN + "one"


def test_a_lock_whose_execution_ended_is_taken_over_after_cleaning_up(aws_env) -> None:
    store = RunStore(TABLE)
    begin(store, ARN + "one")
    ended: list = []
    second = begin(store, ARN + "two", statuses={ARN + "one": "ABORTED"}, ended=ended)
    assert [(lock.execution_arn, status) for lock, status in ended] == [(ARN + "one", "ABORTED")]
    assert store.lock("acme").execution_arn == ARN + "two"
    assert store.lock("acme").run_id == second.run_id


def test_release_only_by_the_holder_then_anyone_may_start(aws_env) -> None:
    store = RunStore(TABLE)
    begin(store, ARN + "one")
    assert not store.release("acme", ARN + "two")
    assert store.release("acme", ARN + "one")
    assert not store.release("acme", ARN + "one")  # idempotent
    third = begin(store, ARN + "three")
    assert store.lock("acme").run_id == third.run_id


def test_a_page_is_counted_once_even_when_it_runs_twice(aws_env) -> None:
    store = RunStore(TABLE)
    run = begin(store, ARN + "one")
    store.set_plan(run, pages_total=2, persons_estimate=900, plan_key="plans/x.json")
    store.page_failed("acme", run.run_id, 0, "EfficyUnavailable: 504")
    assert store.page_done("acme", run.run_id, 0, 500, {"created": 400, "skip:OPENED equals '1'": 100})
    assert not store.page_done("acme", run.run_id, 0, 500, {"created": 400})
    store.page_failed("acme", run.run_id, 0, "late error of an earlier attempt")  # does not undo "done"
    current = store.get("acme", run.run_id)
    assert current.counters == {"created": 400, "skip:OPENED equals '1'": 100, "pages_done": 1}
    assert current.pages_counted == {0}
    assert current.pages_total == 2 and current.persons_estimate == 900
    pages = store.pages("acme", run.run_id)
    assert pages[0].status == "done" and pages[0].attempts == 2  # one failed, one done


def test_end_happens_once(aws_env) -> None:
    store = RunStore(TABLE)
    run = begin(store, ARN + "one")
    assert store.end("acme", run.run_id, "cancelled", report={"status": "cancelled"})
    assert not store.end("acme", run.run_id, "failed", error={"Error": "X"})
    ended = store.get("acme", run.run_id)
    assert ended.status == "cancelled" and ended.report == {"status": "cancelled"} and ended.error is None


def test_parking_needs_the_running_lock_and_drain_requeues_each_person_once(aws_env) -> None:
    store = RunStore(TABLE)
    lot = ParkingLot(TABLE, store)
    run = begin(store, ARN + "one")
    assert lot.active_run("acme") == run.run_id
    assert lot.park("acme", 7, run.run_id)
    assert lot.park("acme", 7, run.run_id)  # ten changes of one person park once
    assert lot.park("acme", 8, run.run_id)
    assert not lot.park("acme", 9, "some-other-run")
    assert lot.count("acme") == 2
    assert store.get("acme", run.run_id).counters["parked_messages"] == 3

    store.release("acme", ARN + "one")
    assert lot.active_run("acme") is None
    assert not lot.park("acme", 10, run.run_id)  # after the release nothing parks: the drain cannot miss it
    assert lot.drain("acme", aws_env["queue"]) == 2
    assert lot.count("acme") == 0
    bodies = received(aws_env["queue"])
    assert sorted(b["person_key"] for b in bodies) == [7, 8]
    assert {(b["source"], b["operation"], b["integration_id"]) for b in bodies} == {("parked", "Resync", "acme")}
    assert lot.drain("acme", aws_env["queue"]) == 0


def test_a_key_parked_again_while_draining_keeps_its_item(aws_env) -> None:
    store = RunStore(TABLE)
    lot = ParkingLot(TABLE, store)
    run = begin(store, ARN + "one")
    lot.park("acme", 7, run.run_id)
    items = list(lot._items("acme"))
    lot.park("acme", 7, run.run_id)  # parked again after the drain read it
    assert lot._requeue("acme", aws_env["queue"], items) == 1
    assert lot.count("acme") == 1


def test_a_dry_run_holds_the_lock_but_parks_nothing(aws_env) -> None:
    store = RunStore(TABLE)
    lot = ParkingLot(TABLE, store)
    begin(store, ARN + "dry", dry_run=True)
    assert store.lock("acme").held
    assert lot.active_run("acme") is None  # real-time changes keep flowing during a dry run
    with pytest.raises(SyncAlreadyRunning):
        begin(store, ARN + "real")


# ---- run history (issue 14.5) -------------------------------------------------------------------------------


def _end_run(store: RunStore, arn: str, status: str) -> str:
    run = begin(store, arn, statuses={})
    store.release("acme", arn)
    assert store.end("acme", run.run_id, status)
    return run.run_id


def _item(run_id: str) -> dict[str, Any]:
    return boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"pk": {"S": "FULLSYNC#acme"}, "sk": {"S": f"RUN#{run_id}"}}
    )["Item"]


def test_history_is_newest_first_with_who_and_the_outcome(aws_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from efficy_sync.store import runs as runs_module

    store = RunStore(TABLE)
    stamps = iter(["20260101T100000Z", "20260101T110000Z", "20260101T120000Z"])
    monkeypatch.setattr(runs_module, "new_run_id", lambda arn, now=None: f"{next(stamps)}-{arn[-3:]}")
    first = _end_run(store, ARN + "one", "succeeded")
    second = _end_run(store, ARN + "two", "cancelled")
    third = begin(store, ARN + "thr")  # still running
    history = store.history("acme")
    assert [r.run_id for r in history] == [third.run_id, second, first]
    assert [r.status for r in history] == ["running", "cancelled", "succeeded"]
    assert all(r.config_version == 3 for r in history)
    assert [r.run_id for r in store.history("acme", limit=2)] == [third.run_id, second]


def test_who_started_the_run_is_recorded(aws_env) -> None:
    store = RunStore(TABLE)
    run = store.begin(
        "acme",
        ARN + "who",
        dry_run=False,
        config_version=7,
        write_mode="diff",
        max_concurrency=5,
        holder_status=lambda holder: "RUNNING",
        end_stale=lambda lock, status: None,
        started_by="arn:aws:iam::123456789012:user/alice",
        started_via="cli",
    )
    stored = store.get("acme", run.run_id)
    assert stored.started_by == "arn:aws:iam::123456789012:user/alice" and stored.started_via == "cli"


def test_an_ended_run_and_its_pages_expire_by_ttl_a_running_one_does_not(aws_env) -> None:
    import time

    from efficy_sync.fullsync.runs import RUN_RETENTION_DAYS, TTL_ATTRIBUTE

    store = RunStore(TABLE)
    run = begin(store, ARN + "ttl")
    store.page_done("acme", run.run_id, 0, 10, {"persons": 10})
    assert TTL_ATTRIBUTE not in _item(run.run_id)  # running: never expires
    store.release("acme", ARN + "ttl")
    store.end("acme", run.run_id, "succeeded")
    ttl = int(_item(run.run_id)[TTL_ATTRIBUTE]["N"])
    assert abs(ttl - (time.time() + RUN_RETENTION_DAYS * 86400)) < 120
    page = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"pk": {"S": f"FULLSYNC#acme#{run.run_id}"}, "sk": {"S": "PAGE#000000"}}
    )["Item"]
    assert int(page[TTL_ATTRIBUTE]["N"]) > time.time()


def test_the_history_keeps_at_most_the_newest_runs_and_never_a_running_one(
    aws_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from efficy_sync.store import runs as runs_module

    monkeypatch.setattr(runs_module, "RUN_HISTORY_MAX", 3)
    store = RunStore(TABLE)
    stamps = iter(f"20260101T{h:02d}0000Z" for h in range(10, 20))
    monkeypatch.setattr(runs_module, "new_run_id", lambda arn, now=None: f"{next(stamps)}-{arn[-3:]}")
    ended = [_end_run(store, ARN + f"r{i:02d}", "succeeded") for i in range(5)]
    assert [r.run_id for r in store.history("acme")] == ended[:1:-1]  # the newest 3 kept
    running = begin(store, ARN + "run")
    assert store.prune("acme", keep=0) == 3  # every ended run, not the running one
    assert [r.run_id for r in store.history("acme")] == [running.run_id]
