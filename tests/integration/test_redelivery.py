"""A failed message comes back later and later (efficy_sync/redelivery.py), on moto's SQS in this process.

Before, the real-time worker left a failed change to the contact queue's 6-minute visibility timeout: five
receives, and an APSIS or Efficy outage of half an hour had dead-lettered every change it touched."""

from __future__ import annotations

import time
from typing import Any

import boto3
import pytest
from efficy_sync.redelivery import delay_retry, retry_delay


def test_the_schedule_doubles_from_30_s_to_6_h_and_the_local_stack_scales_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert retry_delay(20) == 6 * 3600
    assert sum(retry_delay(n) for n in range(1, 10)) > 4 * 3600  # maxReceiveCount 10: about four hours
    monkeypatch.setenv("EFFICY_SYNC_RETRY_FIRST_SECONDS", "1")
    monkeypatch.setenv("EFFICY_SYNC_RETRY_MAX_SECONDS", "2")
    assert [retry_delay(n) for n in (1, 2, 3, 9)] == [1, 2, 2, 2]
    monkeypatch.setenv("EFFICY_SYNC_RETRY_FIRST_SECONDS", "soon")  # a typo keeps the default, not a crash
    monkeypatch.delenv("EFFICY_SYNC_RETRY_MAX_SECONDS")
    assert retry_delay(1) == 30


def _visible_in(region: str, url: str) -> float:
    """Seconds until the queue's one message is visible again, read from moto's backend."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    (message,) = sqs_backends[DEFAULT_ACCOUNT_ID][region].get_queue(url.rsplit("/", 1)[1])._messages
    return message.visible_at / 1000 - time.time()


def _received(sqs: Any, url: str) -> dict[str, Any]:
    (message,) = sqs.receive_message(
        QueueUrl=url, VisibilityTimeout=5, MessageSystemAttributeNames=["ApproximateReceiveCount"]
    )["Messages"]
    return message


def test_a_failed_message_is_invisible_for_its_receive_s_delay(in_process_aws: str) -> None:
    sqs = boto3.client("sqs", region_name=in_process_aws)
    url = sqs.create_queue(QueueName="changes.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}", MessageGroupId="g", MessageDeduplicationId="d")
    message = _received(sqs, url)
    assert _visible_in(in_process_aws, url) < 6  # the receive's own 5 s
    delay_retry(url, message["ReceiptHandle"], 3)
    assert (
        retry_delay(3) - 30 < _visible_in(in_process_aws, url) <= retry_delay(3)
    )  # 120 s, not 5 (a loaded CI: 30 s slack)
    assert sqs.receive_message(QueueUrl=url).get("Messages") is None


def test_a_delay_that_cannot_be_set_leaves_the_queue_s_own_timeout(
    in_process_aws: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Best effort: no exception from the delay may replace the message's own failure."""
    sqs = boto3.client("sqs", region_name=in_process_aws)
    url = sqs.create_queue(QueueName="changes.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}", MessageGroupId="g", MessageDeduplicationId="d")
    _received(sqs, url)
    delay_retry(url, "not-a-receipt-handle", 1)
    assert 0 < _visible_in(in_process_aws, url) < 6
    assert "could not delay the retry" in caplog.text
