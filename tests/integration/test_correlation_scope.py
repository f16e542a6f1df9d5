"""Issue 14.1: the correlation id of one change is on that change's log lines, SQS message and stored outcome,
and on nothing of the next record of the batch; the APSIS / Efficy calls are trace subsegments without URLs."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from efficy_sync import correlation
from efficy_sync.aws import reset_clients
from efficy_sync.changes import ContactChange
from efficy_sync.clients import spans
from efficy_sync.clients.http import RetryPolicy, build_session
from efficy_sync.observability import logger
from efficy_sync.queue import enqueue_changes
from efficy_sync.state import PersonState
from moto import mock_aws

from tests.memory_store import MemoryPersonStateStore
from tests.unit.test_deadline_wiring import Context, load  # noqa: F401 (load is a fixture)


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    stream = io.StringIO()
    monkeypatch.setattr(logger.registered_handler, "stream", stream)
    # an API handler a test of this worker ran before may have left its request's id on the logger
    # (inject_lambda_context sets it per invocation, and every API invocation has one): not ours to see here
    logger.remove_keys(["correlation_id"])
    return stream


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def test_each_record_logs_its_own_id_and_none_leaks_to_the_next(log: io.StringIO) -> None:
    for cid in ("req-1/1", "req-1/2"):
        with correlation.scope(cid):
            logger.info("person applied")
            logger.info("another line of the same record")
    logger.info("after the batch")
    lines = _lines(log)
    assert [line.get("correlation_id") for line in lines] == ["req-1/1", "req-1/1", "req-1/2", "req-1/2", None]


def test_a_failed_record_does_not_leave_its_id_behind(log: io.StringIO) -> None:
    with pytest.raises(RuntimeError), correlation.scope("req-2/1"):
        logger.info("about to fail")
        raise RuntimeError("APSIS down")
    with correlation.scope(None):
        logger.info("a record without an id")
    logger.info("after")
    lines = _lines(log)
    assert [line.get("correlation_id") for line in lines] == ["req-2/1", None, None]
    assert correlation.current() is None


def test_a_nested_scope_gives_back_the_outer_id(log: io.StringIO) -> None:
    with correlation.scope("request"):
        with correlation.scope("request/1"):
            logger.info("inner")
        logger.info("outer")
    lines = _lines(log)
    assert [line.get("correlation_id") for line in lines] == ["request/1", "request"]


def test_ids_do_not_cross_threads() -> None:
    seen: dict[str, str | None] = {}
    inside = threading.Event()
    release = threading.Event()

    def other() -> None:
        inside.wait(5)
        seen["other"] = correlation.current()
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    with correlation.scope("mine"):
        inside.set()
        release.wait(5)
    thread.join(5)
    assert seen == {"other": None}


def test_the_stored_outcome_names_the_change_that_wrote_it() -> None:
    store = MemoryPersonStateStore()
    with correlation.scope("req-3/1"):
        store.put(PersonState(integration_id="acme", person_key="7", last_outcome="synced"))
    stored = store.get("acme", 7)
    assert stored is not None and stored.correlation_id == "req-3/1"
    with correlation.scope("req-4/1"):
        store.put(stored.model_copy(update={"last_outcome": "failed"}))
    again = store.get("acme", 7)
    assert again is not None and (again.correlation_id, again.last_outcome) == ("req-4/1", "failed")


@mock_aws
def test_enqueued_changes_carry_their_id_as_a_message_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    reset_clients()
    sqs = boto3.client("sqs", region_name="eu-west-1")
    url = sqs.create_queue(
        QueueName="changes.fifo", Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    )["QueueUrl"]
    changes = [
        ContactChange(integration_id="acme", person_key=k, operation="Update", correlation_id=f"req/{k}")
        for k in (1, 2)
    ] + [ContactChange(integration_id="acme", person_key=3, operation="Update")]
    try:
        enqueue_changes(url, changes)
    finally:
        reset_clients()
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])["Messages"]
    by_key = {json.loads(m["Body"])["person_key"]: m for m in received}
    assert by_key[1]["MessageAttributes"]["correlation_id"]["StringValue"] == "req/1"
    assert by_key[2]["MessageAttributes"]["correlation_id"]["StringValue"] == "req/2"
    assert "MessageAttributes" not in by_key[3]
    lambda_shape = {"messageAttributes": {"correlation_id": {"stringValue": "req/1", "dataType": "String"}}}
    assert correlation.from_sqs_record(lambda_shape) == "req/1"


class _Answer(BaseHTTPRequestHandler):
    def do_PATCH(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_each_api_call_is_one_span_named_after_the_api_without_its_url(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[dict[str, Any]] = []

    @contextmanager
    def span(api: str, method: str) -> Iterator[dict[str, Any]]:
        info: dict[str, Any] = {"api": api, "method": method, "correlation_id": correlation.current()}
        yield info
        recorded.append(info)

    monkeypatch.setattr(spans, "call_span", span)
    session = build_session(RetryPolicy(total=0), api="apsis")
    with correlation.scope("req-5/1"):
        assert session.patch(f"{server}/profiles/4711/sections/s/attributes", timeout=5).status_code == 204
    assert recorded == [{"api": "apsis", "method": "PATCH", "correlation_id": "req-5/1", "status": 204, "attempts": 1}]


def test_locally_tracing_is_off_and_no_call_is_wrapped() -> None:
    from efficy_sync import tracing

    assert tracing.tracer.disabled
    assert spans.call_span is None


def _sqs(message_id: str, change: ContactChange, correlation_id: str | None) -> dict[str, Any]:
    attributes = {"correlation_id": {"stringValue": correlation_id, "dataType": "String"}} if correlation_id else {}
    return {"messageId": message_id, "body": change.model_dump_json(), "messageAttributes": attributes}


def test_the_worker_scopes_each_record_to_its_own_id(load: Any) -> None:
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from efficy_sync.sync import Outcome

    app = load("apply_changes")
    seen: list[tuple[int, str | None]] = []

    class Batch:
        def apply(self, change: ContactChange) -> Outcome:
            seen.append((change.person_key, correlation.current()))
            return Outcome(change.person_key, "synced")

    handle = app.record_handler_for(Batch())
    changes = [ContactChange(integration_id="acme", person_key=k, operation="Update") for k in (1, 2, 3)]
    handle(SQSRecord(_sqs("m-1", changes[0], "req/1")))
    # an outer id is given back after the record, and the record's id does not outlive it
    with pytest.raises(RuntimeError), correlation.scope("outer"):
        handle(SQSRecord(_sqs("m-2", changes[1], "req/2")))
        assert correlation.current() == "outer"
        raise RuntimeError("stop")
    handle(SQSRecord(_sqs("m-3", changes[2], None)))  # parked or an old message: known by its message id
    assert seen == [(1, "req/1"), (2, "req/2"), (3, "m-3")]
    assert correlation.current() is None


def test_a_full_sync_page_runs_under_its_run_id(load: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = load("sync_page")
    seen: list[str | None] = []

    def page(event: dict) -> dict:
        seen.append(correlation.current())
        return {"synced": 0}

    monkeypatch.setattr(app.full_sync, "page", page)
    app.handler({"integration_id": "acme", "run_id": "run-42", "page": {"page": 1}}, Context(remaining_ms=300_000))
    assert seen == ["run-42"] and correlation.current() is None
