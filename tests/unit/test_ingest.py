"""Splitting a webhook into per-person messages, and what makes two messages duplicates."""

from __future__ import annotations

from efficy_sync.ingest import split_by_person
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
    assert first.date == "2026-01-01T10:00:05Z"
    assert first.changed_fields == ["NAME"]
    assert first.group_id == "acme#1"


def test_create_then_update_stays_a_create() -> None:
    changes, _, _ = split_by_person("acme", _payload(_rec(1, "Create"), _rec(1, "Update")))
    assert changes[0].operation == "Create"


def test_retried_webhook_has_the_same_dedup_id_but_a_second_edit_in_the_same_second_does_not() -> None:
    once, _, _ = split_by_person("acme", _payload(_rec(1, NAME="a")))
    again, _, _ = split_by_person("acme", _payload(_rec(1, NAME="a")))
    other, _, _ = split_by_person("acme", _payload(_rec(1, NAME="b")))
    assert once[0].dedup_id == again[0].dedup_id
    assert once[0].dedup_id != other[0].dedup_id
    assert len(once[0].dedup_id) <= 128
