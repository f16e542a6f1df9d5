"""Large webhooks travel in bundles and are split onto the FIFO queue after the 202 (efficy_sync.bundles).

In process, moto behind: the webhook Lambda with bundling on (threshold 3, bundles of 4 KB so a small test makes
several), then the splitter Lambda on what the bundle queue received. What must hold: the 202 comes only once
every bundle is queued and nothing reaches the FIFO queue before the split; the split queues exactly the
messages the direct path would have queued (bodies, group ids, de-duplication ids, correlation attributes); a
refused bundle queue is a 500 "send again"; a split that cannot reach the FIFO queue or reads a foreign body keeps the
bundle for SQS's retry and the DLQ.
"""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest
from efficy_sync.ingest import BundlePolicy
from efficy_sync.settings import settings

from tests.integration.test_ingest_routes import (  # noqa: F401 (routes is a fixture)
    REGION,
    Context,
    Routes,
    call,
    hmac_headers,
    records,
    routes,
    webhook_event,
)
from tests.support import ROOT

MAX_BYTES = 4096


def _splitter() -> Any:
    """functions/split_webhook/app.py as Lambda loads it (it reads no config and no secret)."""
    spec = importlib.util.spec_from_file_location(
        "split_webhook_under_test", ROOT / "functions" / "split_webhook" / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bundled(routes: Routes, monkeypatch: pytest.MonkeyPatch) -> tuple[Routes, str]:
    queue = routes.sqs.create_queue(QueueName="bundles")["QueueUrl"]
    monkeypatch.setattr(routes.webhook, "BUNDLES", BundlePolicy(queue_url=queue, over=3, max_bytes=MAX_BYTES))
    return routes, queue


def _fifo(routes: Routes) -> list[dict[str, Any]]:
    """Everything on the FIFO queue, as (body, group, dedup id, correlation attribute)."""
    found = []
    while True:
        got = routes.sqs.receive_message(
            QueueUrl=routes.contact_queue,
            MaxNumberOfMessages=10,
            VisibilityTimeout=60,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        batch = got.get("Messages", [])
        if not batch:
            return found
        for m in batch:
            body = json.loads(m["Body"])
            body.pop("received_at")
            found.append(
                {
                    "body": body,
                    "group": m["Attributes"]["MessageGroupId"],
                    "dedup": m["Attributes"]["MessageDeduplicationId"],
                    "correlation": m["MessageAttributes"]["correlation_id"]["StringValue"],
                }
            )
            routes.sqs.delete_message(QueueUrl=routes.contact_queue, ReceiptHandle=m["ReceiptHandle"])


def _bundle_event(routes: Routes, queue: str) -> dict[str, Any]:
    """What Lambda's event source mapping hands the splitter: the bundle queue's messages as SQS records."""
    got = routes.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, VisibilityTimeout=60)
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:bundles",
                "awsRegion": REGION,
            }
            for m in got.get("Messages", [])
        ]
    }


def test_a_large_webhook_is_a_few_bundles_and_the_split_queues_what_the_direct_path_would(
    bundled: tuple[Routes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    routes, queue = bundled
    body = records(*range(1, 41))
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert (status, answer["accepted"]) == (202, 40)
    assert routes.depth(routes.contact_queue) == 0  # nothing on the FIFO queue before the split
    event = _bundle_event(routes, queue)
    bundles = [r["body"] for r in event["Records"]]
    assert 2 <= len(bundles) <= 10  # 40 changes of about 300 bytes in bundles of 4 KB
    assert all(len(b.encode()) <= MAX_BYTES for b in bundles)
    assert routes.depth(queue) == len(bundles)  # nothing more than what the event holds

    splitter = _splitter()
    assert splitter.handler(event, Context()) == {"batchItemFailures": []}
    split = _fifo(routes)

    # The same webhook through the direct path (bundling off) queues the same messages.
    monkeypatch.setattr(routes.webhook, "BUNDLES", BundlePolicy(queue_url="", over=3, max_bytes=MAX_BYTES))
    assert call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))[0] == 202
    direct = _fifo(routes)
    assert len(split) == 40
    key = lambda m: m["body"]["person_key"]  # noqa: E731

    def same(messages: list[dict]) -> list[dict]:  # each call draws its own de-duplication salt (ingest.py)
        return [{**m, "dedup": None, "body": {**m["body"], "fingerprint": None}} for m in sorted(messages, key=key)]

    assert same(split) == same(direct)
    assert len({m["dedup"] for m in split}) == 40
    assert sorted(m["correlation"] for m in split) == sorted(f"r-1/{n}" for n in range(1, 41))


def test_up_to_the_threshold_a_webhook_goes_straight_to_the_fifo_queue(bundled: tuple[Routes, str]) -> None:
    routes, queue = bundled
    body = records(1, 2, 3)
    assert call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))[0] == 202
    assert (routes.depth(routes.contact_queue), routes.depth(queue)) == (3, 0)


def test_a_refused_bundle_queue_is_a_500_and_nothing_is_queued(
    bundled: tuple[Routes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    routes, queue = bundled
    gone = BundlePolicy(queue_url=queue.replace("bundles", "gone"), over=3, max_bytes=MAX_BYTES)
    monkeypatch.setattr(routes.webhook, "BUNDLES", gone)
    body = records(*range(1, 41))
    status, answer = call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))
    assert status == 500 and "send again" in answer["error"]
    assert (routes.depth(routes.contact_queue), routes.depth(queue)) == (0, 0)


def test_a_split_that_cannot_queue_keeps_the_bundle_and_a_foreign_body_is_never_acknowledged(
    bundled: tuple[Routes, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    routes, queue = bundled
    body = records(*range(1, 11))
    assert call(routes.webhook, webhook_event("acme", body, hmac_headers(body)))[0] == 202
    event = _bundle_event(routes, queue)
    event["Records"].append({**event["Records"][0], "messageId": "foreign", "body": '{"records": []}'})
    splitter = _splitter()

    monkeypatch.setenv("CONTACT_QUEUE_URL", routes.contact_queue.replace("changes.fifo", "gone.fifo"))
    settings.cache_clear()
    failed = {f["itemIdentifier"] for f in splitter.handler(event, Context())["batchItemFailures"]}
    assert failed == {r["messageId"] for r in event["Records"]}  # every bundle comes back, nothing acknowledged

    monkeypatch.setenv("CONTACT_QUEUE_URL", routes.contact_queue)
    settings.cache_clear()
    failed = {f["itemIdentifier"] for f in splitter.handler(event, Context())["batchItemFailures"]}
    assert failed == {"foreign"}  # not a bundle: kept for the DLQ, never guessed at
    assert routes.depth(routes.contact_queue) == 10
