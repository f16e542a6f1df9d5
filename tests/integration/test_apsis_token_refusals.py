"""A token request APSIS refuses is not repeated at once (clients/token_hold.py): APSIS allows 10 token requests
a minute per account, and a client asking again on every call spent them for the whole account."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import ApiError, AuthError, RateLimited, acknowledgeable
from efficy_sync.clients.http import RetryPolicy
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.support import ManualClock

SECTION = "com.apsis1.sections.default"
TOKEN = "POST /oauth/token"
FAST = RetryPolicy(total=5, backoff_factor=0.01, backoff_jitter=0.01, connect_timeout=2, read_timeout=5)
REFUSALS = [
    (400, '{"error": "invalid_client", "error_description": "Client authentication failed"}', AuthError, 1),
    (400, '{"error": "unauthorized_client"}', AuthError, 1),
    (401, '{"title": "Unauthorized", "status": 401, "detail": "invalid client credentials"}', AuthError, 1),
    (429, '{"title": "Too Many Requests", "status": 429}', RateLimited, 6),  # one call's own retries
]


@pytest.fixture(autouse=True)
def a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS's hold: a local stack started in this process earlier sets its own (1 s)."""
    monkeypatch.delenv("EFFICY_SYNC_TOKEN_HOLD_SECONDS", raising=False)


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    sim = ApsisSimulator(import_delay_ms=10, rate_limits=False).start()
    yield sim
    sim.stop()


def client_for(sim: ApsisSimulator, clock: ManualClock, secret: str | None = None) -> ApsisClient:
    secret = sim.client_secret if secret is None else secret
    return ApsisClient(sim.url, sim.client_id, secret, section=SECTION, policy=FAST, clock=clock)


@pytest.mark.parametrize(("status", "body", "error", "asked"), REFUSALS)
def test_a_refused_token_request_is_not_repeated_by_every_call(
    sim: ApsisSimulator, status: int, body: str, error: type[ApiError], asked: int
) -> None:
    """Ten changes of a real-time batch each asked APSIS for a token (six times each on a 429): the account's
    10 a minute went at the first batch of one container. Each change still fails as the integration's failure."""
    clock = ManualClock()
    client = client_for(sim, clock)
    sim.add_fault(
        path_regex="^/oauth/token$", status=status, body=body, content_type="application/json",
        headers={"Retry-After": "0"}, count=1000,
    )  # fmt: skip
    for _ in range(10):
        with pytest.raises(error) as caught:
            client.list_sections()
        assert caught.value.status == status
        assert not acknowledgeable(caught.value)
    assert sim.calls()[TOKEN] == asked
    clock.advance(61)  # a minute on, the client asks again
    sim.clear_faults()
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == asked + 1


def test_a_new_secret_asks_at_once(sim: ApsisSimulator) -> None:
    """A rotated secret builds a new client (connections.py): the old one's refusal does not hold it back."""
    clock = ManualClock()
    with pytest.raises(AuthError):
        client_for(sim, clock, secret="old-fake-secret").list_sections()
    assert [s["discriminator"] for s in client_for(sim, clock).list_sections()] == [SECTION]


def test_an_outage_of_the_token_endpoint_is_not_held(sim: ApsisSimulator) -> None:
    """A 5xx is not a refusal of the credentials or of the account's budget: the next call asks again."""
    client = client_for(sim, ManualClock())
    sim.add_fault(path_regex="^/oauth/token$", status=503, count=6)
    with pytest.raises(ApiError):
        client.list_sections()
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]


def test_a_proxy_s_answer_in_front_of_the_token_endpoint_is_not_held(sim: ApsisSimulator) -> None:
    """A 405 or 404 is not APSIS refusing the credentials (test_apsis_odd_answers.py): the next call asks again."""
    client = client_for(sim, ManualClock())
    sim.add_fault(path_regex="^/oauth/token$", status=405, count=1)
    with pytest.raises(AuthError):
        client.list_sections()
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]


def test_a_token_whose_exp_is_past_by_our_clock_is_still_reused(sim: ApsisSimulator) -> None:
    """Our clock ahead of APSIS's by more than the token's life: the JWT's `exp` read as already past made every
    call ask for a token (ten calls, ten token requests). The answer's relative `expires_in` is used instead."""
    clock = ManualClock()
    clock.advance(2 * 86400)
    client = client_for(sim, clock)
    for _ in range(10):
        client.list_sections()
    assert sim.calls()[TOKEN] == 1


def test_the_hold_follows_the_environment_as_the_retry_delays_do(
    sim: ApsisSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local stack's retry delays are seconds: a minute's hold outlasted all ten receives of a change."""
    monkeypatch.setenv("EFFICY_SYNC_TOKEN_HOLD_SECONDS", "2")
    clock = ManualClock()
    client = client_for(sim, clock)
    sim.add_fault(path_regex="^/oauth/token$", status=401, body="{}", content_type="application/json", count=1000)
    for _ in range(3):
        with pytest.raises(AuthError):
            client.list_sections()
    assert sim.calls()[TOKEN] == 1
    clock.advance(3)
    sim.clear_faults()
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]
