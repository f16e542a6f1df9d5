"""One Efficy client shared by a page's threads when Efficy ends its session: every thread logs on again.

The threads of a full-sync page share one EfficyClient, so a session timeout refuses their calls at once. Each
forgot the EfficySession cookie: the second clear of a cookie already gone raised KeyError out of a person's
sync. The cookie jar's clear is slowed here so every refused thread reaches it before the first one is done, as
the race does now and then on a busy Lambda.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.http import RetryPolicy
from efficy_sync_tools.sims.efficy import EfficySimulator
from requests.cookies import RequestsCookieJar

KEY = "efficy-test-key"
FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
THREADS = 6
PERSON = {"K_CONTACT": 1, "NAME": "Name1", "FIRSTNAME": "Jo", "EMAIL1": "p1@example.com", "profiles": []}


@pytest.fixture
def slow_cookie_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    real = RequestsCookieJar.clear

    def slow(self: RequestsCookieJar, *args: Any) -> None:
        time.sleep(0.3)
        real(self, *args)

    monkeypatch.setattr(RequestsCookieJar, "clear", slow)


def _together(client: EfficyClient, call: Any) -> list[BaseException]:
    start = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            call(client)
        except BaseException as exc:  # what escaped a thread is the finding
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    return errors


def test_threads_refused_together_by_an_expired_session_each_log_on_again(
    sim: EfficySimulator, slow_cookie_clear: None
) -> None:
    sim.upsert_persons([PERSON])
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy:
        efficy.get_persons([1])  # the session every thread then sends
        sim.expire_sessions()
        errors = _together(efficy, lambda client: client.get_persons([1]))
        assert errors == []
        assert list(efficy.get_persons([1])) == [1]
        assert [c.name for c in efficy.session.cookies].count("EfficySession") == 1


def test_threads_told_session_timeout_inside_a_200_each_log_on_again(
    sim: EfficySimulator, slow_cookie_clear: None
) -> None:
    """The other sign of an ended session (contract section 2): the same forgetting, the same race."""
    sim.upsert_persons([PERSON])
    expired = '[{"@name": "exception", "#error": {"errorcode": "FRMK-2612", "errorstring": "Session timeout"}}]'
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy:
        efficy.get_persons([1])
        sim.add_fault(path_regex="^/crm/json", status=200, count=THREADS, body=expired, content_type="application/json")
        errors = _together(efficy, lambda client: client.get_persons([1]))
        assert errors == []


def test_a_session_cookie_gone_before_its_clear_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Between the jar's listing and the clear, another answer may remove the cookie (an expiry in its Set-Cookie,
    handled outside our lock before the jar's own was taken): what was wanted, not a KeyError out of a sync."""
    import requests
    from efficy_sync.clients.efficy_session import SESSION_COOKIE, SessionCookie

    session = requests.Session()
    session.cookies.set(SESSION_COOKIE, "old", domain="efficy.test", path="/")
    real = RequestsCookieJar.clear

    def removed_first(self: RequestsCookieJar, *args: Any) -> None:
        real(self, *args)  # the other answer's removal ...
        real(self, *args)  # ... then ours: KeyError

    monkeypatch.setattr(RequestsCookieJar, "clear", removed_first)
    SessionCookie(session).drop(None)
    assert SESSION_COOKIE not in session.cookies
