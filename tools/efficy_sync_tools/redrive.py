"""Moving messages from a dead-letter queue back to its source queue, keeping FIFO groups.

SQS's own StartMessageMoveTask does not take FIFO queues, so we move them: receive from the DLQ, send to the
source (same message group; a fresh deduplication id, or SQS would drop the message as a duplicate of its
first delivery), then delete from the DLQ. A message is deleted only after the send succeeded, so an
interrupted redrive can duplicate, never lose; the worker's stamp check makes a duplicate harmless.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass
class RedriveReport:
    moved: int = 0
    failed: int = 0


def redrive(sqs: Any, dlq_url: str, source_url: str, *, limit: int | None = None) -> RedriveReport:
    report = RedriveReport()
    fifo = source_url.endswith(".fifo")
    while limit is None or report.moved < limit:
        messages = sqs.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
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
        response = sqs.send_message_batch(QueueUrl=source_url, Entries=entries)
        failed = {f["Id"] for f in response.get("Failed", [])}
        report.failed += len(failed)
        done = [m for i, m in enumerate(messages) if str(i) not in failed]
        if done:
            sqs.delete_message_batch(
                QueueUrl=dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        report.moved += len(done)
        if failed:
            break
    return report
