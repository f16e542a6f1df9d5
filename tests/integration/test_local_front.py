"""The local API front serves one API invocation at a time, as one Lambda sandbox does.

Powertools' REST resolver keeps the event being served on a class attribute; two requests served at once in this
one process would read each other's headers (seen as an opt-out refused for a "missing" token while a webhook
was being served).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests
from efficy_sync_tools.local.front import ApiFront
from efficy_sync_tools.local.template import ApiRoute


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
