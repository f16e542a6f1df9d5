"""apply_changes' SqsFifoPartialProcessor raised BatchProcessingError when every record of a batch failed (powertools'
default, which write_back and split_webhook turn off): a one-message batch whose person met an APSIS outage was
then a Lambda error (ApplyChangesErrorsAlarm: "invocations crashed ... a bug"), not a partial batch failure, and
the Lambda runtime logged the error's text, every child traceback with requests' message (the URL with the person
key), outside the PII-safe formatter. Now it answers the failed messages like any partial failure."""

from __future__ import annotations

import socket
from typing import Any

from efficy_sync.changes import ContactChange
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.http import RetryPolicy

from tests.unit.test_deadline_wiring import Context, load  # noqa: F401 (fixture)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def apsis_down(app: Any, monkeypatch: Any) -> None:
    """The worker's batch: each change's APSIS call meets a closed port (requests' error names the URL)."""
    apsis = ApsisClient(f"http://127.0.0.1:{_closed_port()}", "id", "secret", section="s", policy=RetryPolicy(total=0))
    apsis._access_token = lambda: "token"  # type: ignore[method-assign]

    class Batch:
        def apply(self, change: ContactChange) -> Any:
            apsis.patch_attributes(str(change.person_key), {"com.apsis1.attributes.firstname": "Jane"})  # APSIS down

    monkeypatch.setattr(app.worker, "prefetch", lambda changes: Batch())


def test_a_batch_whose_only_person_meets_an_outage_is_a_partial_failure_not_a_crash(
    load: Any, monkeypatch: Any
) -> None:
    app = load("apply_changes")
    apsis_down(app, monkeypatch)
    change = ContactChange(integration_id="acme", person_key=4711, operation="Update")
    event = {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r",
                "body": change.model_dump_json(),
                "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "acme#4711"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
            }
        ]
    }
    try:
        answer = app.handler(event, Context(remaining_ms=60_000))
    except Exception as exc:  # what the Lambda runtime would log as the invocation's error
        text = str(exc)
        raise AssertionError(
            f"the invocation crashed ({type(exc).__name__}); person key in its text: {'/profiles/4711' in text}\n{text[:600]}"
        ) from None
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}
