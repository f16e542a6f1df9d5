"""A body nested deeper than the JSON parser goes (RecursionError, not ValueError) was answered 503 "send
again" by both routes: a sender that retries 5xx sent it forever, and the alarm blamed the queue. It is bad
input: 400, nothing queued."""

from __future__ import annotations

from tests.integration.test_ingest_routes import (  # noqa: F401  (routes is the fixture)
    OPTOUT_TOKEN,
    Routes,
    call,
    hmac_headers,
    optout_event,
    routes,
    webhook_event,
)

DEPTH = 100_000  # within the routes' body limits, far beyond the parser's recursion


def test_a_webhook_nested_beyond_the_parser_is_refused_not_retried(routes: Routes) -> None:
    body = b"[" * DEPTH + b"]" * DEPTH
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert status == 400, answer
    assert routes.messages(routes.contact_queue) == []


def test_an_optout_nested_beyond_the_parser_is_refused_not_retried(routes: Routes) -> None:
    body = b"[" * 30_000 + b"]" * 30_000  # within the route's 64 KB
    headers = {"X-Apsis-Webhook-Token": OPTOUT_TOKEN, "Content-Type": "application/json"}
    status, answer = call(routes.optout, optout_event("POST", body=body, headers=headers))
    assert status == 400, answer
    assert routes.messages(routes.optout_queue) == []
