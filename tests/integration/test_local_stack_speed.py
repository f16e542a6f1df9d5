"""The local stack's servers keep connections alive, moto's FIFO de-duplication is indexed, pollers long-poll.

Speed is not asserted (no timings): what is asserted is the mechanism that makes it fast (one TCP connection
for many calls, no scan of the queue per message sent, no busy wait, a long poll), and that behaviour is as
before (de-duplication, errors, stopped servers refusing calls, disabled pollers taking nothing).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync_tools.local import moto_sqs
from efficy_sync_tools.local import poller as poller_module
from efficy_sync_tools.local.aws import MotoServer, client
from efficy_sync_tools.local.poller import SqsPoller
from efficy_sync_tools.local.template import SqsSource
from efficy_sync_tools.sims.efficy import EfficySimulator

REGION = "eu-west-1"


@pytest.fixture
def sim() -> Iterator[EfficySimulator]:
    server = EfficySimulator().start()
    try:
        yield server
    finally:
        server.stop()


def _conn(url: str) -> http.client.HTTPConnection:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    return http.client.HTTPConnection(host, int(port), timeout=10)


def _call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> Any:
    conn.request(method, path, body=body)
    response = conn.getresponse()
    response.read()
    return response


# ---- keep-alive ---------------------------------------------------------------------------------------------
def test_a_simulator_answers_many_calls_on_one_connection(sim: EfficySimulator) -> None:
    conn = _conn(sim.url)
    first = _call(conn, "GET", "/_sim/calls")
    sock = conn.sock
    assert first.status == 200
    assert first.getheader("Connection") != "close"
    assert sock is not None  # http.client closes the socket when the server says Connection: close
    for _ in range(5):
        assert _call(conn, "GET", "/_sim/calls").status == 200
    assert conn.sock is sock
    conn.close()


def test_errors_and_unread_bodies_keep_the_connection_usable(sim: EfficySimulator) -> None:
    conn = _conn(sim.url)
    missing = _call(conn, "POST", "/no/such/route", body=b"x" * 100_000)  # a body nobody reads
    assert missing.status == 404
    assert missing.getheader("Content-Length") is not None
    sock = conn.sock
    assert sock is not None
    sim.add_fault(path_regex="/v1/profiles", status=503, count=1)  # an error with an empty body
    failed = _call(conn, "GET", "/v1/profiles")
    assert failed.status == 503
    assert failed.getheader("Content-Length") == "0"
    again = _call(conn, "GET", "/_sim/calls")
    assert again.status == 200
    assert conn.sock is sock
    conn.close()


def test_a_stopped_simulator_closes_the_connections_clients_keep() -> None:
    server = EfficySimulator().start()
    conn = _conn(server.url)
    assert _call(conn, "GET", "/_sim/calls").status == 200
    server.stop()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        _call(conn, "GET", "/_sim/calls")


def test_an_idle_connection_is_closed_and_a_session_carries_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import requests
    from efficy_sync_tools.keepalive import KeepAliveHandler

    monkeypatch.setattr(KeepAliveHandler, "timeout", 0.3)
    server = EfficySimulator().start()
    try:
        with requests.Session() as http:
            assert http.get(f"{server.url}/_sim/calls", timeout=5).status_code == 200
            time.sleep(0.8)  # the server closes the idle connection, as a load balancer does
            assert http.get(f"{server.url}/_sim/calls", timeout=5).status_code == 200
    finally:
        server.stop()


def test_moto_answers_boto3_on_one_connection(moto: MotoServer) -> None:
    conn = _conn(moto.endpoint)
    for _ in range(3):
        response = _call(conn, "GET", "/moto-api/data.json")
        assert response.status == 200
        assert response.getheader("Connection") != "close"
    sqs = client("sqs", moto.endpoint, REGION)
    sqs.create_queue(QueueName="keepalive")
    accepted: list[Any] = []
    server = moto._server
    original = type(server).get_request

    def counting(self: Any) -> Any:
        accepted.append(1)
        return original(self)

    type(server).get_request = counting
    try:
        for _ in range(20):
            sqs.list_queues()
    finally:
        type(server).get_request = original
    assert len(accepted) <= 1  # the client's pooled connection may already be open


# ---- FIFO de-duplication ------------------------------------------------------------------------------------
def _fifo(moto: MotoServer, name: str) -> tuple[Any, str]:
    sqs = client("sqs", moto.endpoint, REGION)
    url = sqs.create_queue(
        QueueName=f"{name}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false", "DeduplicationScope": "messageGroup"},
    )["QueueUrl"]
    return sqs, url


def _drain(sqs: Any, url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not got:
            return bodies
        for m in got:
            bodies.append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_same_dedup_id_within_the_window_is_one_message(moto: MotoServer) -> None:
    sqs, url = _fifo(moto, "dedup-same")
    for body in ("first", "retried"):
        sqs.send_message(QueueUrl=url, MessageBody=body, MessageGroupId="g1", MessageDeduplicationId="d1")
    sqs.send_message_batch(
        QueueUrl=url,
        Entries=[{"Id": "a", "MessageBody": "batched", "MessageGroupId": "g1", "MessageDeduplicationId": "d1"}],
    )
    assert _drain(sqs, url) == ["first"]


def test_different_dedup_ids_are_two_messages(moto: MotoServer) -> None:
    sqs, url = _fifo(moto, "dedup-different")
    sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g1", MessageDeduplicationId="d1")
    sqs.send_message(QueueUrl=url, MessageBody="two", MessageGroupId="g1", MessageDeduplicationId="d2")
    assert _drain(sqs, url) == ["one", "two"]


def test_dedup_is_moto_s_after_the_window_and_after_a_delete(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.sqs import models

    sqs, url = _fifo(moto, "dedup-window")
    sqs.send_message(QueueUrl=url, MessageBody="one", MessageGroupId="g1", MessageDeduplicationId="d1")
    assert _drain(sqs, url) == ["one"]
    # moto forgets a deleted message's id (AWS would not: the product never relies on either)
    sqs.send_message(QueueUrl=url, MessageBody="again", MessageGroupId="g1", MessageDeduplicationId="d1")
    monkeypatch.setattr(models, "DEDUPLICATION_TIME_IN_SECONDS", 1)
    time.sleep(1.1)
    sqs.send_message(QueueUrl=url, MessageBody="later", MessageGroupId="g1", MessageDeduplicationId="d1")
    assert _drain(sqs, url) == ["again", "later"]


class _CountingList(list):
    iterations = 0

    def __iter__(self) -> Iterator[Any]:
        type(self).iterations += 1
        return super().__iter__()


def test_sending_does_not_scan_the_queue(moto: MotoServer) -> None:
    from moto.sqs.models import sqs_backends

    sqs, url = _fifo(moto, "dedup-scan")
    sqs.send_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "MessageBody": str(i), "MessageGroupId": f"g{i}", "MessageDeduplicationId": f"d{i}"}
            for i in range(10)
        ],
    )
    queue = sqs_backends["123456789012"][REGION].queues["dedup-scan.fifo"]
    queue._messages = _CountingList(queue._messages)
    _CountingList.iterations = 0
    sqs.send_message(QueueUrl=url, MessageBody="new", MessageGroupId="g", MessageDeduplicationId="new-id")
    assert _CountingList.iterations == 0
    assert len(queue._messages) == 11


# ---- long polling -------------------------------------------------------------------------------------------
def test_a_long_poll_on_a_blocked_fifo_group_does_not_spin(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.sqs.models import Queue

    sqs, url = _fifo(moto, "longpoll-blocked")
    for i in range(2):
        sqs.send_message(QueueUrl=url, MessageBody=str(i), MessageGroupId="g1", MessageDeduplicationId=f"d{i}")
    assert len(sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]) == 1  # g1 is now in flight
    waits: list[int] = []
    original = Queue.wait_for_messages

    def counting(self: Any, timeout: int) -> None:
        waits.append(1)
        original(self, timeout)

    monkeypatch.setattr(Queue, "wait_for_messages", counting)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1).get("Messages", [])
    assert got == []  # the group's next message waits for the first one, as on AWS
    assert len(waits) < 50  # a wait that returns at once (moto's) loops tens of thousands of times a second


def test_a_long_poll_returns_when_a_message_is_sent(moto: MotoServer) -> None:
    sqs, url = _fifo(moto, "longpoll-wakes")
    got: list[Any] = []
    thread = threading.Thread(
        target=lambda: got.extend(sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10).get("Messages", []))
    )
    thread.start()
    time.sleep(0.3)
    sqs.send_message(QueueUrl=url, MessageBody="hello", MessageGroupId="g1", MessageDeduplicationId="d1")
    thread.join(timeout=8)  # well before the 10 s wait ends
    assert [m["Body"] for m in got] == ["hello"]


def _poller(sqs: Any, url: str, router: Any, source: SqsSource | None = None, workers: int = 1) -> SqsPoller:
    """A poller of `url` handing its batches to `router` (the stack's in-process Lambda stand-in)."""
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return SqsPoller(source or SqsSource("fn", "Q"), url, arn, router, sqs, region=REGION, workers=workers)


class _Router:
    """The poller's in-process Lambda: records the batches it is handed."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        self.delivered = threading.Event()

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        self.bodies += [r["body"] for r in event["Records"]]
        self.delivered.set()
        return {"batchItemFailures": []}


def test_the_poller_long_polls_and_delivers(moto: MotoServer) -> None:
    sqs, url = _fifo(moto, "poller")
    waits: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        if threading.current_thread().name.startswith("poll-"):
            waits.append(params.get("WaitTimeSeconds", 0))

    sqs.meta.events.register("provide-client-params.sqs.ReceiveMessage", record)
    router = _Router()
    poller = _poller(sqs, url, router)
    poller.start()
    try:
        sqs.send_message(QueueUrl=url, MessageBody="hello", MessageGroupId="g1", MessageDeduplicationId="d1")
        assert router.delivered.wait(timeout=10)
        poller.enabled = False  # returns once no receive is under way: nothing is taken after it
        sqs.send_message(QueueUrl=url, MessageBody="parked", MessageGroupId="g2", MessageDeduplicationId="d2")
        time.sleep(0.3)
    finally:
        poller.stop()
    assert router.bodies == ["hello"]
    assert waits and set(waits) == {poller_module.WAIT_SECONDS} and poller_module.WAIT_SECONDS >= 5  # 1 s: the idle CPU
    assert [m["Body"] for m in sqs.receive_message(QueueUrl=url).get("Messages", [])] == ["parked"]


class _SlowRouter(_Router):
    """A Lambda that takes a moment per batch, so a burst outlasts one worker's receive."""

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.05)
        return super().invoke(function, event)


def test_a_quiet_queue_is_polled_by_one_worker_and_a_burst_by_all(moto: MotoServer) -> None:
    """Idle, only the first worker polls (every receive is CPU the in-process functions lose); once it takes
    messages, the others join, and every message is delivered once."""
    sqs, url = _fifo(moto, "poller-scales")
    receivers: list[str] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        if threading.current_thread().name.startswith("poll-"):
            receivers.append(threading.current_thread().name)

    sqs.meta.events.register("provide-client-params.sqs.ReceiveMessage", record)
    router = _SlowRouter()
    poller = _poller(sqs, url, router, SqsSource("fn", "Q", batch_size=1), workers=3)
    poller.start()
    try:
        time.sleep(2.5)  # idle: a long poll by the lead alone (WAIT_SECONDS)
        idle = list(receivers)
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": f"m{i}", "MessageGroupId": f"g{i}", "MessageDeduplicationId": f"d{i}"}
                for i in range(10)
            ],
        )
        deadline = time.monotonic() + 20
        while len(router.bodies) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.stop()
    assert idle and set(idle) == {"poll-fn-0"}
    assert sorted(router.bodies) == sorted(f"m{i}" for i in range(10))
    assert len(set(receivers) - {"poll-fn-0"}) >= 1  # the burst woke the other workers


def test_the_patch_is_applied_by_the_local_stack(moto: MotoServer) -> None:
    assert moto_sqs._applied


def test_concurrent_receives_and_deletes_lose_no_message_and_strand_none(moto: MotoServer) -> None:
    """moto's SQS takes no lock: two receives could take one message and two deletes could put back a message
    the other had deleted, leaving it in flight for the visibility timeout (moto_sqs.py). Eight consumers at
    once: every message is received once, and the queue ends empty, nothing in flight."""
    sqs, url = _fifo(moto, "concurrent-consumers")
    for start in range(0, 400, 10):
        sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {
                    "Id": str(i),
                    "MessageBody": f"m{i}",
                    "MessageGroupId": f"g{i % 80}",
                    "MessageDeduplicationId": f"d{i}",
                }
                for i in range(start, start + 10)
            ],
        )
    received: list[str] = []
    lock = threading.Lock()

    def consume() -> None:
        idle = 0
        while idle < 3:
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not messages:
                idle += 1
                continue
            idle = 0
            with lock:
                received.extend(m["Body"] for m in messages)
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )

    threads = [threading.Thread(target=consume) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert sorted(received) == sorted(f"m{i}" for i in range(400))  # each once
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


class _StallingRouter(_Router):
    """A Lambda that holds its batch until told to end, so a stop can come while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        self.started.set()
        self.release.wait(timeout=10)
        return super().invoke(function, event)


def test_a_stop_waits_for_the_batch_in_a_function_and_its_delete(moto: MotoServer) -> None:
    """LocalStack.stop pulls moto down right after the pollers are idle: a batch still in its function then
    lost its AWS calls half way and its delete raised in the worker thread (a traceback at every stop)."""
    sqs, url = _fifo(moto, "poller-drain")
    router = _StallingRouter()
    poller = _poller(sqs, url, router)
    poller.start()
    try:
        sqs.send_message(QueueUrl=url, MessageBody="in flight", MessageGroupId="g1", MessageDeduplicationId="d1")
        assert router.started.wait(timeout=10)
        poller.signal_stop()
        assert poller.wait_idle(0.2) is False  # the function still holds the batch
        router.release.set()
        assert poller.wait_idle(10) is True
    finally:
        poller.stop()
    assert router.bodies == ["in flight"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
        "0",
        "0",
    )  # deleted: not left in flight for its visibility timeout


def test_a_worker_survives_a_failed_delete_and_goes_on_delivering(moto: MotoServer) -> None:
    """A delete that raised used to end the worker thread: with one worker, the queue was never read again."""
    sqs, url = _fifo(moto, "poller-delete-fails")
    failures = [1]

    def fail_once(**_: Any) -> None:
        if failures:
            failures.pop()
            raise ConnectionError("the server went away for a moment")

    sqs.meta.events.register("before-call.sqs.DeleteMessageBatch", fail_once)
    router = _Router()
    poller = _poller(sqs, url, router)
    poller.start()
    try:
        sqs.send_message(QueueUrl=url, MessageBody="first", MessageGroupId="g1", MessageDeduplicationId="d1")
        deadline = time.monotonic() + 10
        while not router.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
        sqs.send_message(QueueUrl=url, MessageBody="second", MessageGroupId="g2", MessageDeduplicationId="d2")
        deadline = time.monotonic() + 10
        while "second" not in router.bodies and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        poller.stop()
    assert not failures  # the delete did fail once
    assert router.bodies[:2] == ["first", "second"]


def test_a_stop_stops_the_simulators_webhooks_before_aws() -> None:
    """Every make bench logged "webhook not queued: SQS could not be reached" at a stack stop: the simulators
    still sent webhooks to the front after moto had stopped. Inputs now stop first."""
    from efficy_sync_tools.local.stack import LocalStack

    order: list[str] = []

    class Part:
        def __init__(self, name: str) -> None:
            self.name = name

        def stop_webhooks(self) -> None:
            order.append(f"{self.name} webhooks")

        def stop(self) -> None:
            order.append(f"{self.name} stopped")

    stack = LocalStack()
    for name in ("moto", "front", "efficy", "apsis", "relay"):
        setattr(stack, name, Part(name))
    stack.stop()
    assert order.index("efficy webhooks") < order.index("moto stopped")
    assert order.index("apsis webhooks") < order.index("moto stopped")
    assert order[-4:] == ["front stopped", "efficy stopped", "apsis stopped", "relay stopped"]


def test_status_events_ask_step_functions_only_while_a_run_is_on(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle stack asked moto for its executions every second, a fifth of its idle CPU (and the status events
    of every test's stack share the test run's two cores). It now looks when moto relays a run's first Lambda
    task (every run begins with one), then at each tick until no run is on; a run's end is still delivered."""
    import json

    from efficy_sync_tools.local import aws
    from efficy_sync_tools.local import stack as stack_module
    from efficy_sync_tools.local.moto_process import LambdaRelay
    from efficy_sync_tools.local.template import EventRuleSource

    monkeypatch.setattr(stack_module, "STATUS_SECONDS", 0.1)  # a tick each 0.1 s while a run is on
    monkeypatch.setattr(stack_module, "STATUS_IDLE_SECONDS", 60.0)
    sfn = client("stepfunctions", moto.endpoint, REGION)
    machine = sfn.create_state_machine(
        name="status-events",
        definition=json.dumps({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/status-events",
    )["stateMachineArn"]
    looks: list[float] = []

    def counting_client(service: str, endpoint: str, region: str) -> Any:
        made = client(service, endpoint, region)
        made.meta.events.register(
            "provide-client-params.sfn.ListExecutions", lambda **_: looks.append(time.monotonic())
        )
        return made

    monkeypatch.setattr(aws, "client", counting_client)
    events: list[tuple[str, str]] = []

    class Router:
        def invoke(self, function: str, event: dict[str, Any]) -> None:
            events.append((function, event["detail"]["status"]))

    stack = stack_module.LocalStack()
    stack.moto = moto  # type: ignore[assignment]
    stack.relay = LambdaRelay()
    stack.stack = type("Deployed", (), {"state_machines": {"FullSync": machine}, "physical": {}})()
    stack.router = Router()  # type: ignore[assignment]
    rule = EventRuleSource("RunEnded", {"detail": {"status": ["ABORTED", "TIMED_OUT", "FAILED"]}})
    thread = threading.Thread(target=stack._status_loop, args=([rule],), daemon=True)
    thread.start()
    try:
        time.sleep(1.0)
        assert len(looks) == 1  # the first look, then none while no run is on (ten at a tick of 0.1 s)
        execution = sfn.start_execution(stateMachineArn=machine, name="run-1")["executionArn"]
        stack.relay.invoked.set()  # what the relay does when moto invokes the run's first task
        deadline = time.monotonic() + 10
        while len(looks) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(looks) >= 4  # a look each tick while the run is on
        sfn.stop_execution(executionArn=execution)
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
        assert events == [("RunEnded", "ABORTED")]
        time.sleep(0.3)
        settled = len(looks)
        time.sleep(1.0)
        assert len(looks) == settled  # idle again once no run is on
    finally:
        stack._stop.set()
        stack.relay.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()  # the relay's stop wakes the idle wait
