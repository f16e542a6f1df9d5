"""One odd record in an Efficy webhook batch must not cost the batch (contracts/efficy.md §3, §7, §10).

Efficy sends thousands of records per call and its retries are not documented: a 400 for the whole call dropped
every contact change in it, opt-outs included, until the next full sync. Harmless variants are read as meant, a
contact record that is still invalid is skipped alone (counted, logged without values), a record of a table we
ignore is ignored whatever its shape, and the body and the signature stay strict.
"""

from __future__ import annotations

import io
import json
import time
from typing import Any

import pytest
from efficy_sync import ingest
from efficy_sync.changes import ContactChange
from efficy_sync.ingest import AcceptResult, accept, split_by_person
from efficy_sync.observability import logger
from efficy_sync.pii import hash_key
from efficy_sync.queue import EnqueueReport
from efficy_sync.webhook import WebhookPayloadError, parse
from efficy_sync.webhook_auth import WebhookAuthError, sign

from tests.unit.consent_configs import consent_config

SECRET = "fake-webhook-secret"
DATE = "2026-01-01T10:00:00Z"
COMPANY_TABLE = 10000


def _rec(key: object = 5, **changes: object) -> dict[str, Any]:
    return {"table": 11000, "key": key, "operation": "Update", "fields": {"NAME": "Doe"}, "date": DATE, **changes}


def _body(*records: object) -> bytes:
    return json.dumps({"database": "crm", "version": "12.1", "records": list(records)}).encode()


# ---- harmless variants are read as meant ----------------------------------------------------------------------


# (parameters are not named `key` or `user`: tests/conftest.py has fixtures of those names)
@pytest.mark.parametrize(
    ("given", "expected"),
    [(123.0, 123), ("123", 123), ("0042", 42), ("123.0", 123), ("11000.00", 11000), (2.0**53 - 1, 2**53 - 1)],
)
def test_a_whole_key_written_as_a_float_or_as_digits_names_that_person(given: object, expected: int) -> None:
    (record,) = parse(_body(_rec(key=given))).records
    assert record.key == expected and type(record.key) is int


@pytest.mark.parametrize("table", ["11000", 11000.0])
def test_the_contact_table_written_as_digits_or_a_whole_float_is_the_contact_table(table: object) -> None:
    payload = parse(_body(_rec(key=7, table=table)))
    assert [r.key for r in payload.records] == [7]
    assert payload.other_tables == 0


def test_fields_null_is_no_changed_values() -> None:
    (record,) = parse(_body(_rec(fields=None))).records
    assert record.fields == {}


def test_fields_as_an_empty_array_is_no_changed_values() -> None:
    """A serializer that writes an empty map as `[]` (on a create or a delete: no changed values, contract §7)
    set the record aside: a call holding only that change was refused (400) and the change lost."""
    payload = parse(_body(_rec(fields=[], operation="Delete")))
    assert [(r.key, r.operation, r.fields) for r in payload.records] == [(5, "Delete", {})]
    assert payload.invalid == []


@pytest.mark.parametrize(("given", "expected"), [(42, "42"), (4.5, "4.5")])
def test_a_numeric_user_is_kept_as_its_text(given: object, expected: str) -> None:
    (record,) = parse(_body(_rec(user=given))).records
    assert record.user == expected


@pytest.mark.parametrize("date", [None, "", "   ", "missing"])
def test_a_null_empty_or_missing_date_is_absent(date: object) -> None:
    record = _rec()
    if date == "missing":
        del record["date"]
    else:
        record["date"] = date
    (parsed,) = parse(_body(record)).records
    assert parsed.date is None and parsed.key == 5


def test_numeric_database_and_version_labels_do_not_refuse_the_call() -> None:
    payload = parse(json.dumps({"database": 3, "version": 12.1, "records": [_rec()]}).encode())
    assert (payload.version, [r.key for r in payload.records]) == ("12.1", [5])


# ---- an absent date never outranks a dated change, and is never taken for a copy -------------------------------


def test_an_undated_record_never_wins_over_a_dated_one_of_the_same_person() -> None:
    later = "2026-01-01T11:00:00Z"
    for records in ((_rec(date=later), _rec(date=None)), (_rec(date=None), _rec(date=later))):
        (change,), contacts, _ = split_by_person("acme", parse(_body(*records)))
        assert (change.person_key, change.date, contacts) == (5, "2026-01-01T11:00:00.000Z", 2)


def test_two_undated_edits_with_the_same_values_are_not_one_message_for_sqs() -> None:
    # With no date and `fields: null` both calls would otherwise carry the same de-duplication id, and SQS
    # would drop the second edit within five minutes although the worker may have read the person before it.
    body = _body(_rec(fields=None, date=None))
    (first,), _, _ = split_by_person("acme", parse(body))
    (second,), _, _ = split_by_person("acme", parse(body))
    assert first.date == second.date == ""
    assert first.dedup_id != second.dedup_id


# ---- an invalid contact record is skipped alone -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"key": 12.5}, "key"),
        ({"key": "12_3"}, "key"),
        ({"key": "12.5"}, "key"),
        ({"key": " 12"}, "key"),
        ({"key": "1e3"}, "key"),
        ({"key": True}, "key"),
        ({"key": 0}, "key"),
        ({"key": 2**53}, "key"),
        ({"key": "jane@example.com"}, "key"),
        ({"fields": ["NAME"]}, "fields"),
        ({"table": "11000.5"}, "table"),
        ({"table": None}, "table"),
    ],
)
def test_one_bad_contact_record_is_set_aside_and_the_others_are_kept(bad: dict[str, object], field: str) -> None:
    payload = parse(_body(_rec(1), {**_rec(2), **bad}, _rec(3)))
    assert [r.key for r in payload.records] == [1, 3]
    (invalid,) = payload.invalid
    assert invalid.index == 1
    assert invalid.reason.startswith(f"records[1].{field}: ")
    for value in bad.values():
        if isinstance(value, str) and len(value) > 2:
            assert value not in invalid.reason


def test_a_record_that_is_not_an_object_is_set_aside() -> None:
    payload = parse(_body(_rec(1), "jane@example.com", None))
    assert [r.key for r in payload.records] == [1]
    assert [(i.index, i.key, i.reason) for i in payload.invalid] == [
        (1, None, "records[1]: must be an object"),
        (2, None, "records[2]: must be an object"),
    ]


@pytest.mark.parametrize(
    ("odd", "operation", "date"),
    [
        ({"date": "01/03/2026 10:05:00"}, "Update", None),  # a Delphi-style date (contracts/efficy.md)
        ({"date": "Sun, 01 Mar 2026 10:05:00 GMT"}, "Update", None),
        ({"date": 20260101}, "Update", None),
        ({"operation": "update"}, "Update", "2026-01-01T10:00:00.000Z"),
        ({"operation": "DELETE"}, "Delete", "2026-01-01T10:00:00.000Z"),
        ({"operation": "Merge"}, "Resync", "2026-01-01T10:00:00.000Z"),
        ({"operation": None}, "Resync", "2026-01-01T10:00:00.000Z"),
        ({"operation": "jane@example.com"}, "Resync", "2026-01-01T10:00:00.000Z"),
    ],
)
def test_a_contact_record_with_a_readable_key_is_kept_whatever_its_date_or_operation(
    odd: dict[str, object], operation: str, date: str | None
) -> None:
    """Only the key says whose change it is; the worker refetches the person. Setting such a record aside lost
    the change under a 202 (an opt-out among them): Efficy does not resend an answered call."""
    payload = parse(_body(_rec(1), {**_rec(2), **odd}))
    assert payload.invalid == []
    (_, second) = payload.records
    assert (second.key, second.operation, second.date) == (2, operation, date)
    (change,) = [c for c in split_by_person("acme", payload)[0] if c.person_key == 2]
    assert change.operation == operation


def test_the_key_of_a_set_aside_record_is_kept_when_it_can_be_read() -> None:
    payload = parse(_body(_rec(1), _rec("77", fields=["NAME"]), _rec(12.5, fields=["NAME"])))
    assert [(i.index, i.key) for i in payload.invalid] == [(1, 77), (2, None)]


# ---- a record of another table is ignored whatever its shape ----------------------------------------------------


@pytest.mark.parametrize(
    "odd",
    [
        {"table": COMPANY_TABLE, "key": 12.5, "operation": "Merge", "fields": "x", "date": "x"},
        {"table": str(COMPANY_TABLE), "key": None},
        {"table": float(COMPANY_TABLE), "user": {"x": 1}},
    ],
)
def test_an_odd_record_of_another_table_is_ignored(odd: dict[str, object]) -> None:
    payload = parse(_body(_rec(1), odd, _rec(2)))
    assert [r.key for r in payload.records] == [1, 2]
    assert (payload.other_tables, payload.invalid) == (1, [])
    alone = parse(_body(odd))
    assert (alone.records, alone.other_tables, alone.invalid) == ([], 1, [])


# ---- the whole path: accepted, counted, logged without personal data ---------------------------------------------


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float]]:
    seen: list[tuple[str, float]] = []
    monkeypatch.setattr(ingest, "count", lambda name, value=1, **_: seen.append((name, value)))
    return seen


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch, counted: list[tuple[str, float]]) -> list[ContactChange]:
    sent: list[ContactChange] = []

    def fake_enqueue(queue_url: str, changes: list[ContactChange]) -> EnqueueReport:
        sent.extend(changes)
        return EnqueueReport(messages=len(changes), batch_calls=1)

    monkeypatch.setattr(ingest, "enqueue_changes", fake_enqueue)
    return sent


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    return stream


def _accept(body: bytes, secret: str = SECRET) -> AcceptResult:
    ts = str(int(time.time()))
    headers = {"X-Efficy-Timestamp": ts, "X-Efficy-Signature": sign(secret, ts, body)}
    return accept(consent_config("acme"), "queue-url", headers, body, SECRET, request_id="req-1")


def test_a_large_batch_with_one_bad_contact_record_queues_every_good_one(
    queued: list[ContactChange], log: io.StringIO, counted: list[tuple[str, float]]
) -> None:
    secret_mail = "jane.private@example.com"
    bad = _rec(
        key=4242,
        operation="Merge",
        subject="Jane Private",
        fields=[secret_mail, "OPTOUT"],
    )
    good = [_rec(key=k, fields={"EMAIL1": f"p{k}@example.com"}) for k in range(1, 2001)]
    company = {"table": COMPANY_TABLE, "key": 9.5, "operation": "?"}
    result = _accept(_body(*good[:1000], bad, company, *good[1000:]))
    assert (result.accepted, result.records, result.skipped_invalid, result.skipped_other_tables) == (2000, 2000, 1, 1)
    assert sorted(c.person_key for c in queued) == list(range(1, 2001))
    assert counted == [("WebhookRecordsInvalid", 1)]
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    (skipped,) = [line for line in lines if line["message"] == "webhook record skipped"]
    assert (skipped["record"], skipped["person"]) == (1000, hash_key(4242))
    assert skipped["reason"].startswith("records[1000].fields: ")
    text = log.getvalue()
    assert secret_mail not in text and "Jane Private" not in text and "Merge" not in text and "4242" not in text


def test_log_lines_for_set_aside_records_are_bounded(queued: list[ContactChange], log: io.StringIO) -> None:
    bad = [_rec(key=k, fields=["NAME"]) for k in range(100, 100 + ingest.MAX_INVALID_LOGGED + 30)]
    result = _accept(_body(_rec(1), *bad))
    assert (result.accepted, result.skipped_invalid) == (1, len(bad))
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    assert sum(line["message"] == "webhook record skipped" for line in lines) == ingest.MAX_INVALID_LOGGED
    (summary,) = [line for line in lines if line["message"] == "webhook records skipped"]
    assert summary["invalid"] == len(bad)


# ---- what stays strict ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"", "empty body"),
        (b"not json", "body: Invalid JSON"),
        (b"[]", "body:"),
        (b'"records"', "body:"),
        (b"{}", "records: Field required"),
        (b'{"records": null}', "records:"),
        (b'{"records": {"0": {}}}', "records:"),
    ],
)
def test_a_body_that_is_not_an_object_with_a_records_list_is_refused(body: bytes, named: str) -> None:
    with pytest.raises(WebhookPayloadError, match=named):
        parse(body)


def test_a_batch_whose_contact_records_are_all_invalid_is_refused_naming_each_field() -> None:
    # Nothing in it could be queued: a 400 loses nothing more, and Efficy keeps the call to retry or resend.
    body = _body(
        _rec(key="jane@example.com"),
        {"table": COMPANY_TABLE, "key": 1, "operation": "Update", "date": DATE},
        _rec(key=3, fields="yesterday"),
        "x",
    )
    with pytest.raises(WebhookPayloadError) as caught:
        parse(body)
    message = str(caught.value)
    assert "records[0].key" in message and "records[2].fields" in message and "records[3]: must be an object" in message
    assert "jane" not in message and "yesterday" not in message


def test_many_invalid_records_name_five_and_count_the_rest() -> None:
    with pytest.raises(WebhookPayloadError, match=r"\(\+3 more\)$"):
        parse(_body(*[_rec(key=k, fields=["NAME"]) for k in range(1, 9)]))


def test_an_empty_batch_or_one_of_other_tables_only_is_still_accepted() -> None:
    assert parse(_body()).records == []
    assert parse(_body({"table": COMPANY_TABLE, "key": 1})).other_tables == 1


def test_the_signature_is_checked_before_anything_is_read(queued: list[ContactChange]) -> None:
    body = _body(_rec(1), _rec(2, fields=["NAME"]))
    with pytest.raises(WebhookAuthError, match="wrong X-Efficy-Signature"):
        _accept(body, secret="not-the-secret")
    with pytest.raises(WebhookAuthError):
        accept(consent_config("acme"), "queue-url", {}, body, SECRET)
    assert queued == []
