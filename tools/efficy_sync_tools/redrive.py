"""Moving messages from a dead-letter queue back to its source queue.

AWS's own dead-letter queue redrive (StartMessageMoveTask, ListMessageMoveTasks) is used wherever the endpoint
has it: it takes standard and, in current AWS documentation, FIFO queues too (a FIFO DLQ redrives to a FIFO
queue; older SDK documentation, and some partitions, still say standard queues only). SQS moves the messages
itself, asynchronously, as new messages (new message id, retention restarted), so a moved message is not
dropped as a duplicate of its first delivery.

The hand-written mover is the fallback: for an endpoint without the API (the local stack: moto does not
implement it), for a queue type the endpoint's move task refuses, and for `--limit` (a move task cannot stop
after N messages). It receives from the DLQ, sends to the source (same message group; a fresh deduplication id,
or SQS would drop the message as a duplicate of its first delivery), then deletes from the DLQ. A message is
deleted only after the send succeeded, so an interrupted redrive can duplicate, never lose; the worker's stamp
check makes a duplicate harmless.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MOVE_TASK = "StartMessageMoveTask"
#: SendMessageBatch's limit on the sum of its messages (1 MiB), less room for the request's own fields: ten
#: webhook bundles of 250 KB are 2.5 MB, and the mover's one batch of them was refused every time
MAX_BATCH_BYTES = 1_048_576 - 32_768
MOVER = "mover"
#: error codes with which an endpoint says it has no move task, or not for this queue
_UNSUPPORTED_CODES = {
    "UnsupportedOperation",
    "AWS.SimpleQueueService.UnsupportedOperation",
    "InvalidAction",
    "NotImplemented",
    "NotImplementedError",
    "UnknownOperationException",
}
_ENDED = ("COMPLETED", "CANCELLED", "FAILED")


@dataclass
class RedriveReport:
    moved: int = 0
    failed: int = 0
    method: str = MOVER  # MOVE_TASK | MOVER
    reason: str = ""  # why the mover was used, or what the move task did
    task_status: str | None = None  # the move task's last status (RUNNING | COMPLETED | CANCELLED | FAILED)
    task_handle: str | None = None
    failure: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"method": self.method, "moved": self.moved, "failed": self.failed}
        if self.reason:
            doc["reason"] = self.reason
        if self.method == MOVE_TASK:
            doc.update(task_status=self.task_status, task_handle=self.task_handle, failure=self.failure)
        return doc


class MoveTaskUnavailable(Exception):
    """The endpoint has no move task, or not for this queue: the mover takes over."""


def unsupported(exc: BaseException) -> str | None:
    """Why `exc` means "no move task here" (the reason to print), or None for any other error (access denied,
    a missing queue, throttling past the retries), which the caller must see rather than have hidden."""
    if isinstance(exc, NotImplementedError):  # moto in-process
        return "the endpoint does not implement it"
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error", {}) or {}
    code = str(error.get("Code", ""))
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    if code in _UNSUPPORTED_CODES:
        detail = f"{code}: {error['Message']}" if error.get("Message") else code
        return f"the endpoint refuses it for this queue ({detail})"
    if status in (500, 501) and not code.isalpha():
        # moto's server answers an action it lacks with an HTML 500 (no AWS error code): not a service answer
        return "the endpoint does not implement it"
    return None


def redrive(
    sqs: Any,
    dlq_url: str,
    source_url: str,
    *,
    limit: int | None = None,
    method: str = "auto",
    wait: float = 120.0,
    poll: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveReport:
    """Move the DLQ's messages back to `source_url`: with SQS's move task where the endpoint has it (method
    "auto" or MOVE_TASK), else with the mover. A move task is waited for up to `wait` seconds."""
    if method == MOVER:
        return _mover(sqs, dlq_url, source_url, limit=limit, reason="asked for (--method mover)")
    if limit is not None:
        if method == MOVE_TASK:
            raise ValueError("a move task cannot stop after a number of messages: drop --limit or use the mover")
        return _mover(sqs, dlq_url, source_url, limit=limit, reason="--limit (a move task moves every message)")
    try:
        return move_task(sqs, dlq_url, source_url, wait=wait, poll=poll, sleep=sleep)
    except MoveTaskUnavailable as exc:
        if method == MOVE_TASK:
            raise
        return _mover(sqs, dlq_url, source_url, limit=None, reason=f"{MOVE_TASK} not available: {exc}")


def move_task(
    sqs: Any,
    dlq_url: str,
    source_url: str,
    *,
    wait: float = 120.0,
    poll: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> RedriveReport:
    """SQS's own redrive: one task per DLQ (a task already running is followed, not doubled), polled with
    ListMessageMoveTasks until it ends or `wait` runs out. Raises MoveTaskUnavailable when the endpoint has none."""
    dlq_arn = _arn(sqs, dlq_url)
    try:
        running = [t for t in _tasks(sqs, dlq_arn) if t.get("Status") == "RUNNING"]
        if running:
            handle, reason = running[0].get("TaskHandle"), "a move task of this queue was already running: followed it"
        else:
            handle = sqs.start_message_move_task(SourceArn=dlq_arn, DestinationArn=_arn(sqs, source_url))["TaskHandle"]
            reason = ""
    except Exception as exc:
        why = unsupported(exc)
        if why is None:
            raise
        raise MoveTaskUnavailable(why) from exc
    report = RedriveReport(method=MOVE_TASK, reason=reason, task_handle=handle, task_status="RUNNING")
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        task = next((t for t in _tasks(sqs, dlq_arn) if t.get("TaskHandle") == handle or not handle), None)
        if task is not None:
            report.task_status = task.get("Status")
            report.moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
            report.failure = task.get("FailureReason")
        if report.task_status in _ENDED or time.monotonic() >= deadline:
            break
        sleep(poll)
    if report.task_status == "FAILED":
        report.failed = max(1, int((task or {}).get("ApproximateNumberOfMessagesToMove", 0)) - report.moved)
    return report


def _arn(sqs: Any, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def _tasks(sqs: Any, dlq_arn: str) -> list[dict[str, Any]]:
    return list(sqs.list_message_move_tasks(SourceArn=dlq_arn, MaxResults=10).get("Results", []))


def _mover(sqs: Any, dlq_url: str, source_url: str, *, limit: int | None, reason: str) -> RedriveReport:
    report = RedriveReport(method=MOVER, reason=reason)
    fifo = source_url.endswith(".fifo")
    while limit is None or report.moved < limit:
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10 if limit is None else max(1, min(10, limit - report.moved)),
            # a long poll (any wait above 0) asks every SQS server: a short poll samples some of them and may
            # answer empty while messages remain, which ended the move early with exit 0
            WaitTimeSeconds=1,
            VisibilityTimeout=30,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            break
        entries = []
        for i, m in enumerate(messages):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
            if m.get("MessageAttributes"):
                entry["MessageAttributes"] = m["MessageAttributes"]
            if fifo:
                entry["MessageGroupId"] = m.get("Attributes", {}).get("MessageGroupId", "redrive")
                entry["MessageDeduplicationId"] = f"redrive-{uuid.uuid4().hex}"
            entries.append(entry)
        stored: set[str] = set()
        failed: set[str] = set()
        for batch in _within_batch_limit(entries):  # in order: a FIFO group's messages keep theirs
            response = sqs.send_message_batch(QueueUrl=source_url, Entries=batch)
            # moved only where the answer lists it as stored: an entry it lists in neither list stays in the
            # DLQ (deleting it lost the message when SQS had not kept it)
            stored |= {s["Id"] for s in response.get("Successful", [])}
            failed |= {entry["Id"] for entry in batch} - stored
            if failed:
                break  # the rest stay in the DLQ (visible again in 30 s), after the one that failed
        report.failed += len(failed)
        done = [m for i, m in enumerate(messages) if str(i) in stored]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        report.moved += len(done)
        if failed:
            break
    return report


def _within_batch_limit(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """`entries` in order, in batches whose messages (bodies and attributes) fit MAX_BATCH_BYTES."""
    batches: list[list[dict[str, Any]]] = []
    size = 0
    for entry in entries:
        weight = len(entry["MessageBody"].encode()) + len(repr(entry.get("MessageAttributes", {})).encode())
        if batches and size + weight <= MAX_BATCH_BYTES:
            batches[-1].append(entry)
            size += weight
        else:
            batches.append([entry])
            size = weight
    return batches
