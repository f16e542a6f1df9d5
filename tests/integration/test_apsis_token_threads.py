"""One APSIS client shared by a page's threads when APSIS stops taking its token with 403 (401 and 403 are both
seen for an expired token): every call in flight is refused at once, and each must end up with the new token.

Only the first refused call was allowed a new token (a 403 gets one at most once a minute, as it may be about
permission); the other calls, refused with the same old token, failed as AuthError, a configuration problem,
though the token had been replaced. Here each thread holds its 403 until all have one, so the race happens
every time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import AuthError
from efficy_sync.clients.http import RetryPolicy
from efficy_sync_tools.sims.apsis import ApsisSimulator

SECTION = "com.apsis1.sections.default"
TOKEN = "POST /oauth/token"
FAST = RetryPolicy(total=5, backoff_factor=0.01, backoff_jitter=0.01, connect_timeout=2, read_timeout=5)
THREADS = 6


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(expired_token_status=403).start()
    yield sim
    sim.stop()


def _refused_together(client: ApsisClient) -> None:
    """Each thread's first 403 waits for the others' before the client decides what to do with it."""
    all_refused = threading.Barrier(THREADS)
    seen = threading.local()
    send = client._send

    def held(*args: Any, **kwargs: Any) -> Any:
        response = send(*args, **kwargs)
        if response.status_code == 403 and not getattr(seen, "refused", False):
            seen.refused = True
            all_refused.wait(10)
        return response

    client._send = held  # type: ignore[method-assign]


def _together(client: ApsisClient) -> list[Any]:
    """list_sections from every thread at once: the sections each saw, or what it raised."""
    start = threading.Barrier(THREADS)
    answers: list[Any] = []

    def call() -> None:
        start.wait()
        try:
            answers.append([s["discriminator"] for s in client.list_sections()])
        except Exception as exc:  # what a thread raised is the finding
            answers.append(exc)

    threads = [threading.Thread(target=call) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return answers


def test_calls_refused_together_with_an_expired_token_all_use_the_new_one(sim: ApsisSimulator) -> None:
    client = ApsisClient(sim.url, sim.client_id, sim.client_secret, section=SECTION, policy=FAST)
    client.list_keyspaces()
    sim.revoke_tokens()
    _refused_together(client)
    assert _together(client) == [[SECTION]] * THREADS
    assert sim.calls()[TOKEN] == 2  # one new token for them all


def test_calls_refused_together_for_permission_still_cost_one_new_token(sim: ApsisSimulator) -> None:
    """The other 403 (an API client not allowed the endpoint): each call fails, and the token endpoint, which
    allows 10 requests a minute per account, is asked once, not once per thread."""
    client = ApsisClient(sim.url, sim.client_id, sim.client_secret, section=SECTION, policy=FAST)
    client.list_keyspaces()
    sim.add_fault(path_regex="^/audience/sections$", status=403, count=100)
    _refused_together(client)
    answers = _together(client)
    assert len(answers) == THREADS and all(isinstance(answer, AuthError) for answer in answers)
    assert sim.calls()[TOKEN] == 2
