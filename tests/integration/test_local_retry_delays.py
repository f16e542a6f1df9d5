"""The local stack keeps a function's own retry delay (local/moto_sqs.py `_delays_kept`).

Its pollers shorten a failed message's visibility to `retry_delay` seconds after each batch, where Lambda leaves
the queue's visibility timeout. That overwrote the delay the worker had just set (efficy_sync/redelivery.py), so
the local stack retried every failure at the pollers' one pace and dead-lettered where AWS would still wait.
These tests start the local stack's own MotoServer in this process (its patches are what is under test).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync_tools.local.aws import MotoServer, client
from efficy_sync_tools.local.moto_sqs import POLLER_AGENT


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[MotoServer]:
    monkeypatch.setenv("MOTO_PORT", "0")  # MotoServer sets it; monkeypatch puts the old value back afterwards
    running = MotoServer().start()
    try:
        yield running
    finally:
        running.stop()


def _visible_in(url: str) -> float:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sqs.models import sqs_backends

    (message,) = sqs_backends[DEFAULT_ACCOUNT_ID]["eu-west-1"].get_queue(url.rsplit("/", 1)[1])._messages
    return message.visible_at / 1000 - time.time()


def _queue_with_a_received_message(sqs: Any, name: str) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{}", MessageGroupId="g", MessageDeduplicationId="d")
    (message,) = sqs.receive_message(QueueUrl=url, VisibilityTimeout=300)["Messages"]
    return url, message["ReceiptHandle"]


def test_the_poller_s_shortcut_leaves_a_delay_the_function_set(server: MotoServer) -> None:
    function = client("sqs", server.endpoint, "eu-west-1")
    poller = client("sqs", server.endpoint, "eu-west-1", agent=POLLER_AGENT)
    url, handle = _queue_with_a_received_message(function, "kept.fifo")
    function.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=120)  # the worker
    poller.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=1)  # after the batch
    assert _visible_in(url) > 100


def test_the_poller_s_shortcut_still_applies_when_the_function_set_nothing(server: MotoServer) -> None:
    function = client("sqs", server.endpoint, "eu-west-1")
    poller = client("sqs", server.endpoint, "eu-west-1", agent=POLLER_AGENT)
    url, handle = _queue_with_a_received_message(function, "shortened.fifo")
    poller.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=1)
    assert _visible_in(url) <= 1
    # received again, the message has a new receipt: the function's delay of the old one no longer counts
    time.sleep(1.1)
    (again,) = function.receive_message(QueueUrl=url, VisibilityTimeout=300)["Messages"]
    poller.change_message_visibility(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"], VisibilityTimeout=1)
    assert _visible_in(url) <= 1
