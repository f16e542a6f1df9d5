"""Which failed changes the real-time worker delays (efficy_sync/redelivery.py), as functions/apply_changes wires it.

A review of the first version found: the last receive was delayed too (SQS dead-letters on the next receive, so
the DLQ, its alarm and the person's later changes waited about 4 h more, 8.5 h in all); a bug or a record Efficy
refuses was delayed like an outage (hours before the DLQ instead of the queue's pace); and a delay that could
not be set logged a traceback carrying the person's own failure, an APSIS URL with their key, in clear. The real
SQS call is tested against moto in tests/integration/test_redelivery.py; here the wiring, with its AWS calls
refused on this machine (test_deadline_wiring.load)."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync.changes import ContactChange
from efficy_sync.clients.errors import ApsisUnavailable, AuthError, MappingGone
from efficy_sync.observability import PiiSafeFormatter
from efficy_sync.redelivery import MAX_RECEIVES

from tests.unit.test_apply_all_failed_batch import apsis_down
from tests.unit.test_deadline_wiring import Context, load  # noqa: F401 (fixture)


def _event(key: int, receives: int) -> dict[str, Any]:
    change = ContactChange(integration_id="acme", person_key=key, operation="Update")
    record = {
        "messageId": "m-1",
        "receiptHandle": "r-1",
        "body": change.model_dump_json(),
        "attributes": {"ApproximateReceiveCount": str(receives), "MessageGroupId": f"acme#{key}"},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    }
    return {"Records": [record]}


def _failing(app: Any, monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    delayed: list[int] = []
    monkeypatch.setattr(app, "delay_retry", lambda url, handle, receives: delayed.append(receives))

    class Batch:
        def apply(self, change: ContactChange) -> Any:
            raise error

    monkeypatch.setattr(app.worker, "prefetch", lambda changes: Batch())
    return delayed


@pytest.mark.parametrize("receives", [1, MAX_RECEIVES - 1, MAX_RECEIVES])
def test_an_outage_is_delayed_and_the_last_receive_too_is_handed_on(
    load: Any, monkeypatch: pytest.MonkeyPatch, receives: int
) -> None:
    app = load("apply_changes")
    delayed = _failing(app, monkeypatch, ApsisUnavailable("503 Service unavailable", status=503))
    answer = app.handler(_event(7, receives), Context(remaining_ms=60_000))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}  # failed, never acknowledged
    assert delayed == [receives]  # redelivery.delay_retry itself skips the last one (below)


@pytest.mark.parametrize("error", [RuntimeError("a bug"), KeyError("K_CONTACT")])
def test_a_failure_that_is_not_the_integration_s_is_not_delayed(
    load: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    app = load("apply_changes")
    delayed = _failing(app, monkeypatch, error)
    answer = app.handler(_event(7, 1), Context(remaining_ms=60_000))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]} and delayed == []


@pytest.mark.parametrize(
    "error",
    [AuthError("401 refused", status=401), MappingGone("the section is not listed", status=404)],
)
def test_a_configuration_failure_is_delayed_as_an_outage(
    load: Any, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """A section, keyspace or mapped name APSIS no longer has fails every change alike until an admin fixes it,
    as refused credentials do: retried later and later, not dead-lettered within the hour."""
    app = load("apply_changes")
    delayed = _failing(app, monkeypatch, error)
    answer = app.handler(_event(7, 2), Context(remaining_ms=60_000))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]} and delayed == [2]


def test_the_last_receive_is_not_delayed(monkeypatch: pytest.MonkeyPatch) -> None:
    from efficy_sync import redelivery

    calls: list[int] = []

    class Sqs:
        def change_message_visibility(self, **kwargs: Any) -> None:
            calls.append(kwargs["VisibilityTimeout"])

    monkeypatch.setattr(redelivery, "brief_client", lambda service: Sqs())
    redelivery.delay_retry("q", "r", MAX_RECEIVES - 1)
    redelivery.delay_retry("q", "r", MAX_RECEIVES)
    assert calls == [redelivery.retry_delay(MAX_RECEIVES - 1)]


def test_a_delay_that_cannot_be_set_logs_no_person_key(
    load: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = load("apply_changes")
    apsis_down(app, monkeypatch)
    answer = app.handler(_event(987654, 1), Context(remaining_ms=60_000))
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
    logs = "\n".join(PiiSafeFormatter().format(record) for record in caplog.records)  # what the Lambda writes
    assert "could not delay the retry" in logs
    assert "987654" not in logs
