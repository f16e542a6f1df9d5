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


def _sent_through(template: SamTemplate, sent: list[tuple[bytes, str | None]]) -> list[dict[str, Any]]:
    recorder = _Recorder()
    routes = [r for r in template.api_routes() if r.path.endswith("/efficy/webhook")]
    front = ApiFront(routes, recorder, stage="dev", binary_media_types=template.binary_media_types())  # type: ignore[arg-type]
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
    return recorder.events


TEXT = '{"records": [{"table": 11000, "key": 7, "fields": {"NAME": "Müller"}}]}'


def test_with_webhook_bodies_as_bytes_every_body_reaches_the_handler_as_the_bytes_sent() -> None:
    """The front passes bodies as the template's API does. As text, API Gateway reads a body as UTF-8, so a
    Windows-1252 body reached the handler altered and its HMAC no longer matched: a 401 on every retry. With the
    stack parameter WebhookBodiesAsBytes, the API's binary media types take every body as bytes (isBase64Encoded),
    whatever its Content-Type says."""
    template = SamTemplate.load(ROOT / "template.yaml")
    template.raw["Parameters"]["WebhookBodiesAsBytes"]["Default"] = "true"
    sent = [
        (TEXT.encode("cp1252"), "application/json; charset=ISO-8859-1"),
        (TEXT.encode(), "application/json; charset=utf-8"),
        (b"\xef\xbb\xbf" + TEXT.encode(), "text/plain"),
        (TEXT.encode(), None),
    ]
    events = _sent_through(template, sent)
    assert [e["isBase64Encoded"] for e in events] == [True] * len(sent)
    assert [base64.b64decode(e["body"]) for e in events] == [body for body, _ in sent]


def test_by_default_a_json_body_reaches_the_handler_as_text() -> None:
    """Base64 is a third larger: Efficy's batches of up to about 6 MB would pass Lambda's 6 MB request limit from
    about 4.5 MB, on every retry. So the default API passes UTF-8 bodies as text, as API Gateway does."""
    template = SamTemplate.load(ROOT / "template.yaml")
    assert template.binary_media_types() == ()
    events = _sent_through(template, [(TEXT.encode(), "application/json"), (TEXT.encode(), None)])
    assert [(e["isBase64Encoded"], e["body"]) for e in events] == [(False, TEXT)] * 2
