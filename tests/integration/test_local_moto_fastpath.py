"""moto's SendMessageBatch answered by the local stack's short path (local/moto_fastpath.py) is moto's answer.

The short path must store and answer exactly what moto's own path does, and leave every error to moto. The
comparison sends the same entries both ways: an entry with DelaySeconds is left to moto's own path.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync_tools.local.aws import MotoServer, client

REGION = "eu-west-1"


@pytest.fixture
def moto_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from moto.sqs.responses import SQSResponse

    calls: list[int] = []
    original = SQSResponse.send_message_batch

    def counting(self: Any) -> Any:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(SQSResponse, "send_message_batch", counting)
    return calls


def _queue(sqs: Any, name: str, fifo: bool = True) -> str:
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"} if fifo else {}
    return sqs.create_queue(QueueName=f"{name}.fifo" if fifo else name, Attributes=attributes)["QueueUrl"]


def _entries(delay: bool = False) -> list[dict[str, Any]]:
    return [
        {
            "Id": f"e{i}",
            "MessageBody": f'{{"person": {i}}}',
            "MessageGroupId": f"person-{i % 3}",
            "MessageDeduplicationId": f"d{i}",
            **({"MessageAttributes": {"correlation_id": {"DataType": "String", "StringValue": f"c/{i}"}}} if i else {}),
            **({"DelaySeconds": 0} if delay else {}),
        }
        for i in range(10)
    ]


def _received(sqs: Any, url: str) -> list[tuple[Any, ...]]:
    got: list[tuple[Any, ...]] = []
    while True:
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], AttributeNames=["All"]
        ).get("Messages", [])
        if not messages:
            return sorted(got)
        for m in messages:
            attrs = m["Attributes"]
            got.append(
                (
                    m["Body"],
                    m["MD5OfBody"],
                    m.get("MD5OfMessageAttributes"),
                    str(m.get("MessageAttributes")),
                    attrs["MessageGroupId"],
                    attrs["MessageDeduplicationId"],
                )
            )
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def _answer(response: dict[str, Any]) -> list[tuple[Any, ...]]:
    return sorted(
        (s["Id"], s["MD5OfMessageBody"], s.get("MD5OfMessageAttributes"), "SequenceNumber" in s)
        for s in response["Successful"]
    )


def test_the_short_path_stores_and_answers_what_moto_does(moto: MotoServer, moto_path_calls: list[int]) -> None:
    sqs = client("sqs", moto.endpoint, REGION)
    fast_url, moto_url = _queue(sqs, "fast"), _queue(sqs, "moto-path")
    fast = sqs.send_message_batch(QueueUrl=fast_url, Entries=_entries())
    assert moto_path_calls == []  # answered by the short path
    slow = sqs.send_message_batch(QueueUrl=moto_url, Entries=_entries(delay=True))
    assert moto_path_calls == [1]  # DelaySeconds is left to moto
    assert fast["Failed"] == slow.get("Failed", []) == []
    assert _answer(fast) == _answer(slow)
    assert len({s["MessageId"] for s in fast["Successful"]}) == 10
    assert _received(sqs, fast_url) == _received(sqs, moto_url)


def test_a_standard_queue_gets_no_sequence_numbers(moto: MotoServer, moto_path_calls: list[int]) -> None:
    sqs = client("sqs", moto.endpoint, REGION)
    url = _queue(sqs, "standard-fast", fifo=False)
    entries = [{"Id": "a", "MessageBody": "one"}, {"Id": "b", "MessageBody": "two"}]
    response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    assert moto_path_calls == []
    assert all("SequenceNumber" not in s and "MD5OfMessageAttributes" not in s for s in response["Successful"])
    assert sorted(m[0] for m in _received_standard(sqs, url)) == ["one", "two"]


def _received_standard(sqs: Any, url: str) -> list[tuple[str]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [(m["Body"],) for m in messages]


def test_fifo_de_duplication_still_holds(moto: MotoServer) -> None:
    sqs = client("sqs", moto.endpoint, REGION)
    url = _queue(sqs, "fast-dedup")
    sqs.send_message_batch(QueueUrl=url, Entries=_entries())
    again = sqs.send_message_batch(QueueUrl=url, Entries=_entries())  # Efficy's retry of the same webhook
    assert len(again["Successful"]) == 10  # SQS accepts a duplicate and drops it
    assert len(_received(sqs, url)) == 10


@pytest.mark.parametrize(
    ("queue", "entries", "code"),
    [
        (
            "missing.fifo",
            [{"Id": "a", "MessageBody": "x", "MessageGroupId": "g", "MessageDeduplicationId": "d"}],
            "NonExistentQueue",
        ),
        (
            "fast-errors.fifo",
            [{"Id": "a", "MessageBody": "x", "MessageGroupId": "g", "MessageDeduplicationId": "d"}] * 2,
            "BatchEntryIdsNotDistinct",
        ),
        ("fast-errors.fifo", [{"Id": "a", "MessageBody": "x", "MessageDeduplicationId": "d"}], "MissingParameter"),
    ],
)
def test_errors_are_moto_s_and_store_nothing(
    moto: MotoServer, moto_path_calls: list[int], queue: str, entries: list[dict[str, Any]], code: str
) -> None:
    sqs = client("sqs", moto.endpoint, REGION)
    url = _queue(sqs, "fast-errors")
    with pytest.raises(ClientError) as caught:
        sqs.send_message_batch(QueueUrl=url.rsplit("/", 1)[0] + "/" + queue, Entries=entries)
    assert code in caught.value.response["Error"]["Code"]
    assert moto_path_calls == [1]  # moto's own path gave the error
    assert _received(sqs, url) == []
