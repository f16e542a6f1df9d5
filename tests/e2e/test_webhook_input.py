"""Bad input to the webhook route: a 4xx whose message names the problem, and nothing enqueued."""

from __future__ import annotations

import json
import time

import pytest

from tests.support import Stack, sign

GOOD_RECORD = {
    "table": 11000,
    "key": 4242,
    "operation": "Update",
    "fields": {"NAME": "x"},
    "date": "2026-01-01T00:00:00Z",
}


def _body(records: list | None = None) -> bytes:
    return json.dumps({"database": "sim", "records": records if records is not None else [GOOD_RECORD]}).encode()


@pytest.fixture
def quiet_queue(stack: Stack) -> Stack:
    stack.idle()  # an earlier test's webhook still on its way would show as "enqueued"
    return stack


def _assert_rejected(stack: Stack, response, status: int, words: list[str]) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"].lower()
    for word in words:
        assert word.lower() in message, message
    assert stack.queue_depth("ContactChangesQueue") == 0


def test_missing_signature(quiet_queue: Stack) -> None:
    body = _body()
    headers = {"X-Efficy-Timestamp": str(int(time.time())), "Content-Type": "application/json"}
    _assert_rejected(quiet_queue, quiet_queue.post_webhook(body, headers), 401, ["missing", "X-Efficy-Signature"])


def test_missing_timestamp(quiet_queue: Stack) -> None:
    body = _body()
    headers = sign(quiet_queue.demo["webhook_secret"], body)
    del headers["X-Efficy-Timestamp"]
    _assert_rejected(quiet_queue, quiet_queue.post_webhook(body, headers), 401, ["missing", "timestamp"])


def test_wrong_signature(quiet_queue: Stack) -> None:
    body = _body()
    _assert_rejected(quiet_queue, quiet_queue.post_webhook(body, sign("wrong", body)), 401, ["wrong"])


def test_signature_of_another_body(quiet_queue: Stack) -> None:
    headers = sign(quiet_queue.demo["webhook_secret"], _body())
    tampered = _body([{**GOOD_RECORD, "key": 4343}])
    _assert_rejected(quiet_queue, quiet_queue.post_webhook(tampered, headers), 401, ["wrong"])


def test_stale_timestamp(quiet_queue: Stack) -> None:
    body = _body()
    headers = sign(quiet_queue.demo["webhook_secret"], body, timestamp=int(time.time()) - 3600)
    _assert_rejected(quiet_queue, quiet_queue.post_webhook(body, headers), 401, ["stale"])


def test_malformed_json(quiet_queue: Stack) -> None:
    body = b'{"records": [ {"table": 11000,'
    _assert_rejected(
        quiet_queue,
        quiet_queue.post_webhook(body, sign(quiet_queue.demo["webhook_secret"], body)),
        400,
        ["malformed", "json"],
    )


def test_missing_field(quiet_queue: Stack) -> None:
    record = {k: v for k, v in GOOD_RECORD.items() if k != "key"}
    body = _body([record])
    _assert_rejected(
        quiet_queue,
        quiet_queue.post_webhook(body, sign(quiet_queue.demo["webhook_secret"], body)),
        400,
        ["records[0].key"],
    )


def test_wrong_type(quiet_queue: Stack) -> None:
    body = _body([{**GOOD_RECORD, "key": "not-a-number"}])
    _assert_rejected(
        quiet_queue,
        quiet_queue.post_webhook(body, sign(quiet_queue.demo["webhook_secret"], body)),
        400,
        ["records[0].key"],
    )


def test_unknown_operation_is_queued_as_a_resync(quiet_queue: Stack) -> None:
    """The key names the person; the worker refetches them. Refused, the change was lost under Efficy's 202."""
    body = _body([{**GOOD_RECORD, "operation": "Explode"}])
    response = quiet_queue.post_webhook(body, sign(quiet_queue.demo["webhook_secret"], body))
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1


def test_oversized_body(quiet_queue: Stack) -> None:
    filler = "x" * 1000
    records = [{**GOOD_RECORD, "key": i + 1, "fields": {"NOTE": filler}} for i in range(7000)]  # ~7.5 MB
    body = _body(records)
    response = quiet_queue.post_webhook(body, sign(quiet_queue.demo["webhook_secret"], body))
    assert response.status_code == 413
    assert "6 mb" in response.text.lower() or "limit" in response.text.lower()
    assert quiet_queue.queue_depth("ContactChangesQueue") == 0


def test_unknown_integration(quiet_queue: Stack) -> None:
    body = _body()
    response = quiet_queue.post_webhook(body, sign(quiet_queue.demo["webhook_secret"], body), integration_id="nobody")
    _assert_rejected(quiet_queue, response, 404, ["unknown integration"])


def test_other_tables_are_counted_and_skipped(quiet_queue: Stack) -> None:
    body = _body([{**GOOD_RECORD, "table": 10000}])
    response = quiet_queue.post_webhook(body, sign(quiet_queue.demo["webhook_secret"], body))
    assert response.status_code == 202
    assert response.json() == {"accepted": 0, "records": 0, "skipped": 1}
    assert quiet_queue.queue_depth("ContactChangesQueue") == 0
