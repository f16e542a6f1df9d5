"""`efficy-sync dlq redrive --queue bundle` with the built-in mover (the local stack, `--limit` on AWS, or where
the move task is refused) re-sent up to ten dead-lettered messages in one SendMessageBatch: ten webhook bundles
of up to 250 KB are 2.5 MB, past the batch's 1 MiB, and the redrive the runbook gives for
WebhookBundleDLQNotEmptyAlarm failed every time (nothing lost, nothing moved). Batches are cut by size now."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from efficy_sync.bundles import pack, unpack
from efficy_sync.changes import ContactChange
from efficy_sync_tools.redrive import MOVER, redrive
from moto import mock_aws

REGION = "eu-west-1"
BUNDLE_BYTES = 250_000  # EFFICY_SYNC_WEBHOOK_BUNDLE_BYTES' default


@pytest.fixture
def queues(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, str]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        dlq = sqs.create_queue(QueueName="bundles-dlq")["QueueUrl"]
        source = sqs.create_queue(QueueName="bundles")["QueueUrl"]
        yield sqs, dlq, source


def test_the_mover_redrives_the_bundles_of_a_large_webhook(queues) -> None:
    sqs, dlq, source = queues
    # A 6,000-person webhook as ingest bundles it (what split_webhook could not split five times)
    changes = [
        ContactChange(
            integration_id="acme",
            person_key=100_000 + n,
            operation="Update",
            date="2026-03-01T10:00:00.000Z",
            received_at=1_767_000_000.123,
            fingerprint=f"{n:032x}",
            correlation_id=f"c0ffee00-1111-2222-3333-444455556666/{n}",
        )
        for n in range(1, 6001)
    ]
    bodies = pack(changes, BUNDLE_BYTES)
    assert len(bodies) >= 5 and all(len(b.encode()) <= BUNDLE_BYTES for b in bodies)
    for body in bodies:
        sqs.send_message(QueueUrl=dlq, MessageBody=body)

    report = redrive(sqs, dlq, source, method=MOVER)  # what the local stack (and `--limit`) uses

    assert (report.moved, report.failed) == (len(bodies), 0)
    moved = []
    while got := sqs.receive_message(QueueUrl=source, MaxNumberOfMessages=10).get("Messages", []):
        for m in got:
            moved += unpack(m["Body"])
            sqs.delete_message(QueueUrl=source, ReceiptHandle=m["ReceiptHandle"])
    assert sorted(c.person_key for c in moved) == [c.person_key for c in changes]
