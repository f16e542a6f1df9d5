"""`dlq redrive` (issue 14.6): SQS's own move task where the endpoint has it, the built-in mover otherwise.

moto (5.2) does not implement StartMessageMoveTask / ListMessageMoveTasks, so the fallback and the mover run
against moto's SQS; the move-task path runs on a real boto3 client whose answers are AWS's documented
responses (botocore's Stubber validates every request and response against the SQS service model), as no
simulator of ours implements the move task.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from efficy_sync_tools.redrive import MOVE_TASK, MOVER, MoveTaskUnavailable, redrive, unsupported
from moto import mock_aws

REGION = "eu-west-1"
ACCOUNT = "123456789012"
DLQ_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:efficy-sync-contact-changes-dlq.fifo"
SOURCE_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:efficy-sync-contact-changes.fifo"
DLQ_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/efficy-sync-contact-changes-dlq.fifo"
SOURCE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/efficy-sync-contact-changes.fifo"


@pytest.fixture
def queues(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, str]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        fifo = {"FifoQueue": "true"}
        dlq = sqs.create_queue(QueueName="changes-dlq.fifo", Attributes=fifo)["QueueUrl"]
        source = sqs.create_queue(QueueName="changes.fifo", Attributes=fifo)["QueueUrl"]
        yield sqs, dlq, source


def _dead_letter(sqs: Any, dlq: str, n: int) -> None:
    for i in range(n):
        sqs.send_message(
            QueueUrl=dlq,
            MessageBody=json.dumps({"integration_id": "demo", "person_key": 1000 + i}),
            MessageGroupId=f"demo#{1000 + i}",
            MessageDeduplicationId=f"first-delivery-{i}",
        )


def _drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    out = []
    while messages := sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["MessageGroupId"]
    ).get("Messages", []):
        for m in messages:
            out.append(m)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return out


def test_without_a_move_task_at_the_endpoint_the_mover_moves_and_says_so(queues) -> None:
    sqs, dlq, source = queues
    _dead_letter(sqs, dlq, 12)
    report = redrive(sqs, dlq, source)
    assert report.method == MOVER and report.moved == 12 and report.failed == 0
    assert f"{MOVE_TASK} not available" in report.reason
    # plain moto: "does not implement"; the local stack's (moto_sqs): UnsupportedOperation, without a traceback
    assert "does not implement" in report.reason or "UnsupportedOperation" in report.reason
    moved = _drain(sqs, source)
    assert sorted(json.loads(m["Body"])["person_key"] for m in moved) == list(range(1000, 1012))
    assert all(m["Attributes"]["MessageGroupId"] == f"demo#{json.loads(m['Body'])['person_key']}" for m in moved)
    assert _drain(sqs, dlq) == []
    assert report.document()["method"] == MOVER


def test_limit_uses_the_mover_and_moves_no_more_than_the_limit(queues) -> None:
    sqs, dlq, source = queues
    _dead_letter(sqs, dlq, 5)
    report = redrive(sqs, dlq, source, limit=2)
    assert report.method == MOVER and "--limit" in report.reason
    assert report.moved == 2 and len(_drain(sqs, source)) == 2  # it used to move a whole batch of 10
    with pytest.raises(ValueError):
        redrive(sqs, dlq, source, limit=2, method=MOVE_TASK)


def test_asking_for_the_move_task_where_there_is_none_is_an_error_not_a_silent_fallback(queues) -> None:
    sqs, dlq, source = queues
    with pytest.raises(MoveTaskUnavailable):
        redrive(sqs, dlq, source, method=MOVE_TASK)


def _stubbed() -> tuple[Any, Stubber]:
    sqs = boto3.client("sqs", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")
    stub = Stubber(sqs)
    for url, arn in ((DLQ_URL, DLQ_ARN),):
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": arn}},
            {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
        )
    return sqs, stub


def _task(status: str, moved: int, **more: Any) -> dict[str, Any]:
    return {
        "Results": [
            {
                "TaskHandle": "handle-1",
                "Status": status,
                "SourceArn": DLQ_ARN,
                "DestinationArn": SOURCE_ARN,
                "ApproximateNumberOfMessagesMoved": moved,
                "ApproximateNumberOfMessagesToMove": 7,
                "StartedTimestamp": 1767225600000,
                **more,
            }
        ]
    }


def test_where_aws_has_the_move_task_it_is_used_and_followed_to_the_end() -> None:
    sqs, stub = _stubbed()
    listing = {"SourceArn": DLQ_ARN, "MaxResults": 10}
    stub.add_response("list_message_move_tasks", {"Results": []}, listing)
    stub.add_response(
        "get_queue_attributes",
        {"Attributes": {"QueueArn": SOURCE_ARN}},
        {"QueueUrl": SOURCE_URL, "AttributeNames": ["QueueArn"]},
    )
    stub.add_response(
        "start_message_move_task", {"TaskHandle": "handle-1"}, {"SourceArn": DLQ_ARN, "DestinationArn": SOURCE_ARN}
    )
    stub.add_response("list_message_move_tasks", _task("RUNNING", 3), listing)
    stub.add_response("list_message_move_tasks", _task("COMPLETED", 7), listing)
    waits: list[float] = []
    with stub:
        report = redrive(sqs, DLQ_URL, SOURCE_URL, sleep=waits.append, poll=2.0)
    stub.assert_no_pending_responses()
    assert report.method == MOVE_TASK and report.moved == 7 and report.failed == 0
    assert report.task_status == "COMPLETED" and report.task_handle == "handle-1"
    assert waits == [2.0]
    assert report.document() == {
        "method": MOVE_TASK,
        "moved": 7,
        "failed": 0,
        "task_status": "COMPLETED",
        "task_handle": "handle-1",
        "failure": None,
    }


def test_a_move_task_already_running_is_followed_not_started_twice() -> None:
    sqs, stub = _stubbed()
    listing = {"SourceArn": DLQ_ARN, "MaxResults": 10}
    stub.add_response("list_message_move_tasks", _task("RUNNING", 1), listing)
    stub.add_response(
        "list_message_move_tasks", _task("FAILED", 4, FailureReason="AccessDenied on the target"), listing
    )
    with stub:
        report = redrive(sqs, DLQ_URL, SOURCE_URL, sleep=lambda s: None)
    stub.assert_no_pending_responses()  # no start_message_move_task was called
    assert report.method == MOVE_TASK and "already running" in report.reason
    assert report.task_status == "FAILED" and report.moved == 4 and report.failed == 3
    assert report.failure == "AccessDenied on the target"


def test_access_denied_is_shown_not_hidden_behind_the_mover() -> None:
    sqs, stub = _stubbed()
    stub.add_client_error(
        "list_message_move_tasks", service_error_code="AccessDenied", http_status_code=403, service_message="no"
    )
    with stub, pytest.raises(ClientError):
        redrive(sqs, DLQ_URL, SOURCE_URL)


def _error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "StartMessageMoveTask",
    )


@pytest.mark.parametrize(
    ("exc", "falls_back"),
    [
        (NotImplementedError("The start_message_move_task action has not been implemented"), True),  # moto in-process
        (_error("500", 500), True),  # moto's server: an HTML 500 without an AWS error code
        (_error("UnsupportedOperation", 400), True),  # a queue type the endpoint's move task refuses
        (_error("AWS.SimpleQueueService.UnsupportedOperation", 400), True),
        (_error("InternalError", 500), False),  # AWS's own 500: not a reason to move by hand
        (_error("AccessDenied", 403), False),
        (_error("AWS.SimpleQueueService.NonExistentQueue", 400), False),
        (ValueError("x"), False),
    ],
)
def test_which_errors_mean_no_move_task_here(exc: BaseException, falls_back: bool) -> None:
    assert (unsupported(exc) is not None) is falls_back


def test_a_message_the_send_answer_does_not_list_as_stored_stays_in_the_dlq(queues) -> None:
    """The mover deleted from the DLQ every message not listed under Failed: an entry SendMessageBatch listed in
    neither list (a partial answer) was deleted although SQS never said it stored it. It now stays."""
    sqs, dlq, source = queues
    _dead_letter(sqs, dlq, 3)

    def drop_one_from_the_answer(parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "SendMessageBatch":
            parsed["Successful"] = [s for s in parsed.get("Successful", []) if s["Id"] != "1"]

    sqs.meta.events.register("after-call.sqs.SendMessageBatch", drop_one_from_the_answer)
    report = redrive(sqs, dlq, source, method=MOVER)
    sqs.meta.events.unregister("after-call.sqs.SendMessageBatch", drop_one_from_the_answer)
    assert report.moved == 2 and report.failed == 1
    attrs = sqs.get_queue_attributes(
        QueueUrl=dlq, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    # still in the DLQ (held invisible for the mover's 30 s), not deleted
    assert int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]) == 1
