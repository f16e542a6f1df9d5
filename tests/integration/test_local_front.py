"""The local API front serves one API invocation at a time, as one Lambda sandbox does.

Powertools' REST resolver keeps the event being served on a class attribute; two requests served at once in this
one process would read each other's headers (seen as an opt-out refused for a "missing" token while a webhook
was being served).
"""

from __future__ import annotations

import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from efficy_sync_tools.local.front import ApiFront
from efficy_sync_tools.local.template import ApiRoute, SamTemplate

from tests.support import ROOT


class _SlowRouter:
    """Counts how many invocations are inside a handler at the same time."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self._lock = threading.Lock()

    def invoke(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        time.sleep(0.2)
        with self._lock:
            self.inside -= 1
        return {"statusCode": 202, "body": name}


def test_api_invocations_do_not_overlap() -> None:
    router = _SlowRouter()
    routes = [
        ApiRoute("IngestWebhookFunction", "POST", "/integrations/{integration_id}/efficy/webhook"),
        ApiRoute("IngestOptoutFunction", "POST", "/integrations/{integration_id}/apsis/optout"),
    ]
    front = ApiFront(routes, router, stage="dev")  # type: ignore[arg-type]
    front.start()
    try:
        urls = [f"{front.url}/integrations/demo/efficy/webhook", f"{front.url}/integrations/demo/apsis/optout"] * 3
        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(lambda url: requests.post(url, data=b"{}", timeout=30), urls))
    finally:
        front.stop()
    assert [a.status_code for a in answers] == [202] * 6
    assert [a.text for a in answers] == ["IngestWebhookFunction", "IngestOptoutFunction"] * 3
    assert router.most_inside == 1


class _Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def invoke(self, name: str, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 202, "body": "{}"}


def test_every_webhook_body_reaches_the_handler_as_the_bytes_sent() -> None:
    """The front passes bodies as the template's API does. As text, API Gateway reads a body as UTF-8, so a
    Windows-1252 body (Efficy runs on Windows) reached the handler altered and its HMAC no longer matched: a 401
    that dropped the batch, while this front (which base64-encoded what was not UTF-8) accepted it. The API's
    binary media types now take every body as bytes (isBase64Encoded), whatever its Content-Type says."""
    template = SamTemplate.load(ROOT / "template.yaml")
    recorder = _Recorder()
    routes = [r for r in template.api_routes() if r.path.endswith("/efficy/webhook")]
    front = ApiFront(routes, recorder, stage="dev", binary_media_types=template.binary_media_types())  # type: ignore[arg-type]
    text = '{"records": [{"table": 11000, "key": 7, "fields": {"NAME": "Müller"}}]}'
    sent = [
        (text.encode("cp1252"), "application/json; charset=ISO-8859-1"),
        (text.encode(), "application/json; charset=utf-8"),
        (b"\xef\xbb\xbf" + text.encode(), "text/plain"),
        (text.encode(), None),
    ]
    front.start()
    try:
        for body, content_type in sent:
            headers = {"Content-Type": content_type} if content_type else {}
            answer = requests.post(
                f"{front.url}/integrations/demo/efficy/webhook", data=body, headers=headers, timeout=30
            )
            assert answer.status_code == 202
    finally:
        front.stop()
    assert [e["isBase64Encoded"] for e in recorder.events] == [True] * len(sent)
    assert [base64.b64decode(e["body"]) for e in recorder.events] == [body for body, _ in sent]
