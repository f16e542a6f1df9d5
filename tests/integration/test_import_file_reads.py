"""Issue 13.1: the Imports step reads a file's Efficy pages several at a time, not one after another (a file
of 20,000 rows is 40 Efficy pages, read before its import can start).

The real EfficyClient against the Efficy simulator over HTTP; a thin wrapper only observes the calls.
"""

from __future__ import annotations

import threading
from typing import Any

from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.collect import QueuedPage, read_file_persons
from efficy_sync_tools.sims.efficy import EfficySimulator

FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=10)
CFG = config_from_dict(
    {
        "integration_id": "reads",
        "efficy": {
            "base_url": "https://crm.example.com/crm",
            "api_key_secret": "x/e",
            "webhook_secret_secret": "x/w",
            "page_size": 10,
        },
        "apsis": {
            "base_url": "https://api.example.com",
            "section": "com.apsis1.sections.default",
            "credentials_secret": "x/a",
            "optout_token_secret": "x/o",
        },
        "field_mappings": [{"efficy": "FIRSTNAME", "apsis": "com.apsis1.attributes.firstname"}],
    }
)


class Overlapping:
    """The real client; each page read waits (at most 5 s) until a second read is under way at the same time."""

    def __init__(self, efficy: EfficyClient) -> None:
        self._efficy = efficy
        self._barrier = threading.Barrier(2, timeout=5)
        self.pages: list[int] = []

    def list_persons_page(self, number: int, size: int, *args: Any, **kwargs: Any) -> Any:
        self.pages.append(number)
        if len(self.pages) <= 2:
            self._barrier.wait()  # BrokenBarrierError when the reads come one after another
        return self._efficy.list_persons_page(number, size, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._efficy, name)


def test_a_files_efficy_pages_are_read_at_the_same_time_and_keep_their_order() -> None:
    sim = EfficySimulator().start()
    try:
        sim.upsert_persons([{"K_CONTACT": k, "NAME": f"N{k}", "FIRSTNAME": f"F{k}"} for k in range(1, 41)])
        group = [QueuedPage(0, page, 10, tuple(range(page * 10 + 1, page * 10 + 11, 2))) for page in range(4)]
        with EfficyClient(sim.url, sim.api_key, policy=FAST) as client:
            efficy = Overlapping(client)
            persons = read_file_persons(CFG, efficy, group)
    finally:
        sim.stop()

    assert sorted(efficy.pages) == [0, 1, 2, 3]
    assert [p["K_CONTACT"] for p in persons] == [k for k in range(1, 41) if k % 2]  # the queued keys, in order
