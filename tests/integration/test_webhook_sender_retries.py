"""What our webhook answers must be what the sender understands: "send again" when it cannot queue a change,
"delivered" when it did.

The generic-connector webhook sender (APSIS's own implementation of the spec that Efficy 12.1's connector
follows, contracts/efficy.md section 10) retries only 429, 500 and 504 and marks any other answer failed for
good. We answered 503 when SQS refused the change: that sender gave up and the change was lost. The route now
answers 500 (routes.SEND_AGAIN). Here the Efficy simulator plays that sender (`retry_statuses`), over real HTTP,
into the real ingest handler (moto in process) whose contact queue is unreachable for the first call.
The same sender counts only a 204 as delivered: `efficy.auth.accepted_status: 204` answers so.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.settings import settings
from efficy_sync_tools.sims.efficy import EfficySimulator
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from tests.integration.test_ingest_routes import WEBHOOK_SECRET, Routes, call, routes, webhook_event  # noqa: F401

GENERIC_SENDER_RETRIES = (429, 500, 504)
GENERIC_SENDER_DELIVERED = (204,)


@pytest.fixture
def route_url(
    routes: Routes, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[str, list[int]]]:
    """The webhook route over HTTP: each POST becomes API Gateway's event for the real handler. The first call
    finds the contact queue gone (SQS refuses it), the next ones the real queue (every one, marked `queue_up`)."""
    answered: list[int] = []
    queue = routes.contact_queue
    refuse_first = request.node.get_closest_marker("queue_up") is None

    @Request.application
    def app(request: Request) -> Response:
        first = not answered and refuse_first
        monkeypatch.setenv("CONTACT_QUEUE_URL", queue.replace("changes.fifo", "gone.fifo") if first else queue)
        settings.cache_clear()
        status, answer = call(routes.webhook, webhook_event("acme", request.get_data(), dict(request.headers)))
        answered.append(status)
        return Response(None if status == 204 else str(answer), status=status)

    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/", answered
    server.shutdown()
    server.server_close()


def deliver(url: str, **sender: Any) -> dict[str, Any]:
    sim = EfficySimulator().start()
    try:
        sim.configure_webhook(
            url,
            WEBHOOK_SECRET,
            mode="hmac",
            batch_ms=10,
            retry_statuses=GENERIC_SENDER_RETRIES,
            retry_backoff_s=0.05,
            max_attempts=3,
            **sender,
        )
        sim.upsert_persons([{"K_CONTACT": 41, "NAME": "Doe", "EMAIL1": "doe@example.com"}], notify=True)
        assert sim.flush_webhooks(timeout=20)
        (delivery,) = sim.deliveries()
        return delivery
    finally:
        sim.stop()


def test_a_change_sqs_refused_is_sent_again_by_the_generic_sender_and_queued(
    routes: Routes, route_url: tuple[str, list[int]]
) -> None:
    url, answered = route_url
    delivery = deliver(url)
    assert answered == [500, 202]
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [41]


def test_with_503_the_generic_sender_gave_up_and_the_change_was_lost(
    routes: Routes, route_url: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the status changed: the answer before it."""
    monkeypatch.setattr(routes.webhook, "SEND_AGAIN", 503)
    url, answered = route_url
    delivery = deliver(url)
    assert answered == [503]
    assert (delivery["status"], delivery["attempts"]) == ("failed", 1)
    assert routes.messages(routes.contact_queue) == []


@pytest.mark.queue_up
@pytest.mark.parametrize("accepted", [202, 204])
def test_a_queued_change_is_delivered_for_the_generic_sender_only_when_answered_204(
    routes: Routes, route_url: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch, accepted: int
) -> None:
    """202 is DESIGN's answer and stays the default; that sender logs it as a failed call (the change is queued
    all the same), so `accepted_status: 204` is there for it: no body, nothing else changes."""
    from tests.integration.test_ingest_routes import CONFIGS

    auth = CONFIGS["hmac"].efficy.auth.model_copy(update={"accepted_status": accepted})
    efficy = CONFIGS["hmac"].efficy.model_copy(update={"auth": auth})
    monkeypatch.setitem(CONFIGS, "hmac", CONFIGS["hmac"].model_copy(update={"efficy": efficy}))
    url, answered = route_url
    delivery = deliver(url, delivered_statuses=GENERIC_SENDER_DELIVERED)
    assert answered == [accepted]
    assert delivery["status"] == ("delivered" if accepted == 204 else "failed") and delivery["attempts"] == 1
    assert [m["person_key"] for m in routes.messages(routes.contact_queue)] == [41]
