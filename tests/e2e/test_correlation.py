"""Issue 14.1 (must show): one webhook followed on the local stack by its correlation id.

It runs on the loud stack (tests/conftest.py), which keeps the handlers' logs and logs every incoming event (so the SQS record the
worker received, with its message attributes, is in the log). Two persons arrive in one webhook: each change
gets its own id, `<request id>/<n>`, found in the ingest's line for it, the SQS message attribute, the worker's
lines about that person and the person's stored outcome; the other person's id appears on none of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.pii import hash_key

from tests.support import Stack, person, unique_key, wait_for

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("loud_stack")]


def _log(stack: Stack, since: int) -> list[dict[str, Any]]:
    """The JSON lines the stack logged after `since` bytes (the loud stack is shared by other tests)."""
    return stack.json_log_lines(since)


def _stored(stack: Stack, key: int) -> dict[str, Any]:
    return stack.stored_state(key)


def _sqs_records(lines: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The SQS records of the events the worker logged (powertools logs the event as the line's message)."""
    for line in lines:
        event = line.get("message")
        if isinstance(event, dict):
            for record in event.get("Records") or []:
                if record.get("eventSource") == "aws:sqs":
                    yield record


def test_one_webhook_is_followed_by_its_correlation_id(loud_stack: Stack) -> None:
    stack = loud_stack
    since = stack.log_path.stat().st_size
    first, second = unique_key(), unique_key()
    stack.seed([person(first), person(second)])
    records = [
        {"table": 11000, "key": k, "operation": "Update", "fields": {}, "date": "2026-03-01T10:00:00Z"}
        for k in (first, second)
    ]
    assert stack.signed_webhook(records).status_code == 202
    wait_for("both persons synced", lambda: _stored(stack, first).get("last_outcome") and _stored(stack, second))

    def applied(key: int) -> list[dict[str, Any]]:
        return [
            line
            for line in _log(stack, since)
            if line.get("message") == "person applied" and line.get("person") == hash_key(key)
        ]

    def received() -> dict[int, str]:
        """person key -> the correlation id on the SQS record the worker received (its logged event)."""
        return {
            json.loads(r["body"])["person_key"]: r["messageAttributes"]["correlation_id"]["stringValue"]
            for r in _sqs_records(_log(stack, since))
        }

    # the lines are written by several threads of the loaded stack: wait for every one this test reads (make
    # test once read the worker's lines but not yet its event's)
    wait_for(
        "the worker's lines and events",
        lambda: applied(first) and applied(second) and {first, second} <= set(received()),
        timeout=30,
    )
    lines = _log(stack, since)
    queued = {line["person"]: line["correlation_id"] for line in lines if line.get("message") == "change queued"}
    ids = {key: queued[hash_key(key)] for key in (first, second)}
    requests = {cid.rsplit("/", 1)[0] for cid in ids.values()}
    assert len(requests) == 1  # one webhook call: both ids name it
    (request_id,) = requests
    assert sorted(ids.values()) == [f"{request_id}/1", f"{request_id}/2"]

    attributes = received()
    for key in (first, second):
        assert attributes[key] == ids[key]  # the SQS message attribute
        assert {line.get("correlation_id") for line in applied(key)} == {ids[key]}  # the worker's lines
        assert _stored(stack, key)["correlation_id"] == ids[key]  # the stored outcome
    # No id leaked: every line that names a person carries that person's id, never the other's.
    for line in lines:
        for key, other in ((first, second), (second, first)):
            if line.get("person") == hash_key(key):
                assert line.get("correlation_id") != ids[other]
