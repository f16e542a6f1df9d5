"""SendMessageBatch answers which entries it stored (`Successful`) and which it refused (`Failed`). An entry its
answer lists in neither was never shown stored: the webhook answered 202 and a drain forgot the parked person on
it (store/parking.py), while only the `Failed` list was read, so a partial answer counted as complete."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync import queue
from efficy_sync.changes import ContactChange


class PartialSqs:
    """Lists only the first `stored` entries of its first answer as stored, and none as failed."""

    def __init__(self, stored: int) -> None:
        self.stored = stored
        self.calls: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [entry["Id"] for entry in Entries]
        self.calls.append(ids)
        listed = ids[: self.stored] if len(self.calls) == 1 else ids
        return {"Successful": [{"Id": i, "MessageId": f"m-{i}", "MD5OfMessageBody": "x"} for i in listed]}


def changes(n: int) -> list[ContactChange]:
    return [
        ContactChange(integration_id="acme", person_key=k, operation="Update", source="webhook", received_at=1.0)
        for k in range(1, n + 1)
    ]


def test_entries_a_batch_answer_does_not_list_as_stored_are_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = PartialSqs(stored=6)
    monkeypatch.setattr(queue, "client", lambda name: sqs)

    report = queue.enqueue_changes("https://queue.example/acme.fifo", changes(10))

    assert sqs.calls[1:] == [["6", "7", "8", "9"]], sqs.calls
    assert report.retried_entries == 4


def test_entries_never_listed_as_stored_fail_the_enqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    sqs = PartialSqs(stored=6)
    sqs.send_message_batch = lambda QueueUrl, Entries: {"Successful": []}  # type: ignore[method-assign]
    monkeypatch.setattr(queue, "client", lambda name: sqs)

    with pytest.raises(queue.EnqueueError):
        queue.enqueue_changes("https://queue.example/acme.fifo", changes(3), attempts=2)
