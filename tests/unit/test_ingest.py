"""Splitting a webhook into per-person messages, and what makes two messages duplicates."""

from __future__ import annotations

import json

from efficy_sync.ingest import MAX_MESSAGE_BYTES, split_by_person
from efficy_sync.webhook import WebhookPayload


def _payload(*records: dict) -> WebhookPayload:
    return WebhookPayload.model_validate({"records": list(records)})


def _rec(key: int, op: str = "Update", date: str = "2026-01-01T10:00:00Z", **fields: object) -> dict:
    return {"table": 11000, "key": key, "operation": op, "fields": fields, "date": date}


def test_one_message_per_person_and_other_tables_skipped() -> None:
    changes, contacts, skipped = split_by_person(
        "acme",
        _payload(
            _rec(1, NAME="a"), _rec(2), _rec(1, NAME="b", date="2026-01-01T10:00:05Z"), {**_rec(9), "table": 10000}
        ),
    )
    assert [c.person_key for c in changes] == [1, 2]
    assert (contacts, skipped) == (3, 1)
    first = changes[0]
    assert first.date == "2026-01-01T10:00:05.000Z"
    assert first.group_id == "acme#1"


def test_create_then_update_stays_a_create() -> None:
    changes, _, _ = split_by_person("acme", _payload(_rec(1, "Create"), _rec(1, "Update")))
    assert changes[0].operation == "Create"


def test_two_calls_with_the_same_record_are_two_messages_for_sqs() -> None:
    """A second real edit in the same second with the same changed values (a relation change: `fields: {}`)
    looks exactly like a retry of the first; SQS would drop it for five minutes, after the worker may have read
    the person before it. A true retry costs one refetch instead."""
    once, _, _ = split_by_person("acme", _payload(_rec(1, NAME="a")))
    again, _, _ = split_by_person("acme", _payload(_rec(1, NAME="a")))
    assert once[0].dedup_id != again[0].dedup_id
    assert len(once[0].dedup_id) <= 128


def test_the_newest_record_s_operation_wins_whatever_the_order_in_the_batch() -> None:
    """A delete followed in the array by an older update is a delete (parking counts deletes by it)."""
    changes, _, _ = split_by_person(
        "acme", _payload(_rec(1, "Delete", date="2026-01-01T10:00:02Z"), _rec(1, "Update", date="2026-01-01T10:00:01Z"))
    )
    assert changes[0].operation == "Delete"


def test_the_later_date_is_chosen_as_an_instant_not_as_text() -> None:
    # 11:30+02:00 is 09:30 UTC: earlier than 10:00Z although it sorts later as text.
    changes, _, _ = split_by_person(
        "acme", _payload(_rec(1, date="2026-01-01T10:00:00Z"), _rec(1, date="2026-01-01T11:30:00+02:00"))
    )
    assert changes[0].date == "2026-01-01T10:00:00.000Z"


def test_a_message_carries_nothing_the_worker_refetches_and_stays_small() -> None:
    huge = {f"F{i}" + "x" * 5000: "v" * 5000 for i in range(50)}
    changes, _, _ = split_by_person("a" * 64, _payload(_rec(2**53 - 1, **huge)))
    raw = changes[0].model_dump_json()
    assert len(raw.encode()) < MAX_MESSAGE_BYTES
    assert set(json.loads(raw)) == {
        "integration_id",
        "person_key",
        "operation",
        "date",
        "source",
        "fingerprint",
        "received_at",
        "correlation_id",
    }
