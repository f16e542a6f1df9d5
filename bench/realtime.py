"""Real-time path figures on the local stack: webhook ingest of a big batch, persons/s, APSIS calls per person."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import requests
from efficy_sync.webhook_auth import sign


def _post(stack: Any, records: list[dict[str, Any]]) -> requests.Response:
    body = json.dumps({"database": "bench", "version": "12.1", "records": records}).encode()
    ts = str(int(time.time()))
    headers = {
        "X-Efficy-Timestamp": ts,
        "X-Efficy-Signature": sign(stack.ready["demo"]["webhook_secret"], ts, body),
        "Content-Type": "application/json",
    }
    return requests.post(f"{stack.front.url}/integrations/demo/efficy/webhook", data=body, headers=headers, timeout=120)


def _count_sqs_batches(stack: Any) -> dict[str, int]:
    """Count SendMessageBatch and SendMessage calls made by the handlers (they share efficy_sync.aws's client
    in-process)."""
    from efficy_sync.aws import client

    counter = {"SendMessageBatch": 0, "SendMessage": 0}
    lock = threading.Lock()  # the splitter sends from 16 threads: `+=` alone loses counts

    def count(event_name: str, **_: Any) -> None:
        with lock:
            counter[event_name.rsplit(".", 1)[1]] += 1

    client("sqs").meta.events.register("before-call.sqs.SendMessageBatch", count)
    client("sqs").meta.events.register("before-call.sqs.SendMessage", count)
    return counter


def _purge(stack: Any, queue_url: str) -> None:
    """PurgeQueue, waiting out SQS's one purge a minute (a second ingest run in the same stack meets it)."""
    deadline = time.monotonic() + 70
    while True:
        try:
            stack.sqs.purge_queue(QueueUrl=queue_url)
            return
        except stack.sqs.exceptions.PurgeQueueInProgress:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _records(keys: range, date: str) -> list[dict[str, Any]]:
    return [
        {
            "table": 11000,
            "key": k,
            "operation": "Update",
            "user": "BENCH",
            "fields": {"FIRSTNAME": f"F{k}"},
            "date": date,
        }
        for k in keys
    ]


def _wait_idle(stack: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        if stack.idle():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 1.0:
                return
        else:
            quiet_since = None
        time.sleep(0.1)
    raise TimeoutError("queue did not drain")


def ingest_10k(stack: Any, n: int = 10_000) -> dict[str, Any]:
    """Accepting one webhook of n records: time to 202 and the SQS calls made before it; then, for a webhook
    sent in bundles (efficy_sync.bundles), the time until the splitter has put every person on the FIFO queue.
    The workers stay paused throughout, so the FIFO queue's depth is what ingest and splitter queued.

    A one-record webhook goes first, so that the figure is a warm Lambda's (the handler's cold start is
    bench.coldstart's figure, and on AWS a webhook of thousands of records rarely meets a cold sandbox)."""
    for poller in stack.pollers.values():
        poller.enabled = False
    fifo = stack.stack.physical["ContactChangesQueue"]
    assert _post(stack, _records(range(899_999, 900_000), "2026-06-01T09:00:00Z")).status_code == 202
    counter = _count_sqs_batches(stack)
    records = [
        {
            "table": 11000,
            "key": 900_000 + i,
            "operation": "Update",
            "user": "BENCH",
            "subject": f"Person {i}",
            "fields": {"FIRSTNAME": f"F{i}", "NAME": f"N{i}", "NOTE": "x" * 200},
            "date": "2026-06-01T10:00:00Z",
        }
        for i in range(n)
    ]
    body_size = len(json.dumps({"records": records}))
    started = time.perf_counter()
    response = _post(stack, records)
    elapsed = time.perf_counter() - started
    before_202 = dict(counter)
    assert response.status_code == 202, response.text
    accepted = response.json()["accepted"]

    def depth() -> int:
        attributes = stack.sqs.get_queue_attributes(QueueUrl=fifo, AttributeNames=["ApproximateNumberOfMessages"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    splitter = stack.pollers.get("SplitWebhookFunction")
    if splitter is not None:
        splitter.enabled = True  # the split runs after the 202, as on AWS; the workers stay paused
    deadline = time.monotonic() + 300
    while depth() < accepted + 1 and time.monotonic() < deadline:  # + the warm-up person
        time.sleep(0.05)
    all_queued = time.perf_counter() - started
    on_queue = depth() - 1
    if splitter is not None:
        splitter.enabled = False
    _purge(stack, fifo)
    for poller in stack.pollers.values():
        poller.enabled = True
    return {
        "records": n,
        "body_mb": round(body_size / 1e6, 2),
        "seconds_to_202": round(elapsed, 2),
        "sqs_calls_before_202": before_202["SendMessage"] + before_202["SendMessageBatch"],
        "bundles": before_202["SendMessage"],
        "seconds_until_all_on_fifo_queue": round(all_queued, 2),
        "send_message_batch_calls": counter["SendMessageBatch"],
        "messages_on_queue": on_queue,
        "accepted": accepted,
    }


def realtime_throughput(stack: Any, n: int = 1000) -> dict[str, Any]:
    """n changed persons through webhook -> SQS -> worker -> APSIS, then the same persons unchanged."""
    efficy, apsis = stack.efficy.url, stack.apsis.url
    base = 500_000
    persons = [
        {
            "K_CONTACT": base + i,
            "NAME": f"N{i}",
            "FIRSTNAME": f"F{i}",
            "EMAIL1": f"b{i}@example.com",
            "MOBILE": f"+3247{i:07d}",
            "LANGUAGE": "EN",
            "OPENED": "1",
            "ROBINSON": "0",
            "profiles": [12] + ([13] if i % 3 == 0 else []),
        }
        for i in range(n)
    ]
    requests.post(f"{efficy}/_sim/persons", json={"persons": persons}, timeout=60).raise_for_status()
    requests.delete(f"{apsis}/_sim/calls", timeout=10)
    requests.delete(f"{efficy}/_sim/calls", timeout=10)
    keys = range(base, base + n)
    refused_before = requests.get(f"{apsis}/_sim/rate", timeout=10).json()["refused"]

    started = time.perf_counter()
    for start in range(0, n, 500):
        assert _post(stack, _records(keys[start : start + 500], "2026-06-02T10:00:00Z")).status_code == 202
    _wait_idle(stack, timeout=600)
    elapsed = time.perf_counter() - started
    created = sum(
        1 for p in requests.get(f"{apsis}/_sim/profiles", timeout=60).json()["profiles"] if int(p["key"]) >= base
    )
    changed_calls = _product_calls(requests.get(f"{apsis}/_sim/calls", timeout=10).json())
    rate = requests.get(f"{apsis}/_sim/rate", timeout=10).json()  # the shared budget keeps it under 90/s
    efficy_calls = sum(
        v for k, v in requests.get(f"{efficy}/_sim/calls", timeout=10).json().items() if k == "POST /crm/json"
    )

    requests.delete(f"{apsis}/_sim/calls", timeout=10)
    for start in range(0, n, 500):
        assert _post(stack, _records(keys[start : start + 500], "2026-06-03T10:00:00Z")).status_code == 202
    _wait_idle(stack, timeout=600)
    unchanged_calls = _product_calls(requests.get(f"{apsis}/_sim/calls", timeout=10).json())
    return {
        "persons": n,
        "profiles_created": created,
        "seconds": round(elapsed, 1),
        "persons_per_second": round(n / elapsed, 1),
        "apsis_calls_per_changed_person": round(changed_calls / n, 2),
        "apsis_calls_per_unchanged_person": round(unchanged_calls / n, 3),
        "efficy_calls_per_person": round(efficy_calls / n, 3),
        "apsis_busiest_second": rate["max_per_second"],
        "apsis_429s": rate["refused"] - refused_before,
    }


def optout_latency(stack: Any, n: int = 20, first_key: int = 500_000) -> dict[str, Any]:
    """Seconds from an unsubscribe in APSIS One to the person leaving the mapped CRM profile in Efficy, one
    person at a time (the persons realtime_throughput synced, all opted in to the newsletter)."""
    from efficy_sync.store.configs import ConfigStore

    efficy, apsis = stack.efficy.url, stack.apsis.url
    cfg = ConfigStore(stack.ready["stack"]["ConfigTable"]).get(stack.ready["demo"]["integration_id"])
    mapping = next(m for m in cfg.consent_mappings if m.channel == "email")
    http = requests.Session()
    latencies: list[float] = []
    for key in range(first_key, first_key + n):
        body = {"profile_key": str(key), "topic": mapping.subscription, "channel": "email"}
        started = time.perf_counter()
        http.post(f"{apsis}/_sim/unsubscribe", json=body, timeout=10).raise_for_status()
        deadline = time.monotonic() + 60
        while mapping.crm_profile in http.get(f"{efficy}/_sim/persons/{key}", timeout=10).json().get("profiles", []):
            if time.monotonic() > deadline:
                raise TimeoutError(f"person {key} still in CRM profile {mapping.crm_profile}")
            time.sleep(0.02)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "persons": n,
        "median_seconds": round(latencies[len(latencies) // 2], 2),
        "max_seconds": round(latencies[-1], 2),
    }


def _product_calls(calls: dict[str, int]) -> int:
    """APSIS calls about persons (token and definition calls are per container, not per person)."""
    return sum(v for k, v in calls.items() if "/profiles/" in k or k.endswith("/profiles"))
