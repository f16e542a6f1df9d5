"""README (Operations): X-Ray subsegments of the APSIS One / Efficy calls carry "method, status and attempts, never
a URL, body or error text (APSIS paths hold the person key)"; tracing.py: "What a trace may hold: no URL, no body,
no response, no exception text". The X-Ray SDK's subsegment context manager recorded str(exception) of whatever
left the `with`: a call that failed to connect put requests' message, the URL with the person key, in the `apsis`
subsegment, and a write-back record that failed validation put pydantic's echo of the message (the opted-out
address) in its `## record` subsegment. Now an exception is recorded by its class alone."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_xray_sdk import global_sdk_config
from aws_xray_sdk.core import xray_recorder
from aws_xray_sdk.core.context import Context as XRayContext
from efficy_sync import tracing
from efficy_sync.clients import spans
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.http import RetryPolicy

from tests.unit.test_deadline_wiring import load  # noqa: F401 (fixture)


class _Emitter:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send_entity(self, entity: Any) -> None:
        self.sent.append(entity.serialize())

    def set_daemon_address(self, address: Any) -> None:
        pass


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Emitter]:
    """X-Ray on as on Lambda (tracing.py's own subsegments), segments captured instead of sent to a daemon."""
    emitter = _Emitter()
    was_enabled = global_sdk_config.sdk_enabled()
    global_sdk_config.set_sdk_enabled(True)
    xray_recorder.configure(context=XRayContext(), emitter=emitter, sampling=False, context_missing="LOG_ERROR")
    monkeypatch.setattr(tracing.tracer, "disabled", False)
    monkeypatch.setattr(spans, "call_span", tracing._call_subsegment)
    xray_recorder.begin_segment("efficy-sync-test")
    yield emitter
    if xray_recorder.current_segment() is not None:
        xray_recorder.end_segment()
    global_sdk_config.set_sdk_enabled(was_enabled)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_an_apsis_call_that_fails_leaves_no_url_nor_person_key_in_the_trace(trace: _Emitter) -> None:
    client = ApsisClient(f"http://127.0.0.1:{_closed_port()}", "id", "secret", section="s", policy=RetryPolicy(total=0))
    client._access_token = lambda: "token"  # type: ignore[method-assign]  # the call itself is what fails
    with pytest.raises(Exception):
        client.patch_attributes("4711", {"com.apsis1.attributes.firstname": "Jane"})
    xray_recorder.end_segment()
    sent = "\n".join(trace.sent)
    assert '"name": "apsis"' in sent  # the call's subsegment was recorded
    assert '"fault": true' in sent and "ConnectionError" in sent  # as a failure, by its class
    assert "/profiles/4711" not in sent and "127.0.0.1" not in sent, sent


def test_a_write_back_record_that_fails_leaves_no_address_in_the_trace(trace: _Emitter, load: Any) -> None:
    app = load("write_back")
    batch = app.WriteBackBatch(lambda integration_id: None, lambda handle, seconds: None)
    body = {
        "integration_id": "acme",
        "event": "email.unsubscribe",
        "occurred_at": "2024-01-01T00:00:00Z",
        "email": "jo@x.io",
    }
    record = SQSRecord(
        {
            "messageId": "m-1",
            "receiptHandle": "r",
            "body": json.dumps(body),
            "attributes": {"ApproximateReceiveCount": "1"},
        }
    )
    with pytest.raises(Exception):
        app._record_handler(batch)(record)
    xray_recorder.end_segment()
    sent = "\n".join(trace.sent)
    assert '"## record"' in sent
    assert "jo@x.io" not in sent, sent
