"""A token request APSIS refuses is not repeated at once (clients/token_hold.py): APSIS allows 10 token requests
a minute per account, and a client asking again on every call spent them for the whole account."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from efficy_sync import aws, connections, secrets
from efficy_sync.apsis_tokens import SsmTokenStore
from efficy_sync.budget import account_key
from efficy_sync.clients import apsis_transport
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import ApiError, AuthError, RateLimited, acknowledgeable
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.settings import settings
from efficy_sync.store.token_refusals import CLEAR_SKEW_SECONDS, TokenRefusals
from efficy_sync_tools.commands import _aws
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import RAW
from tests.support import ManualClock, create_template_table

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


# ---- account-wide: every container of the credentials holds the refusal (store/token_refusals.py) -----------------
STATE = "efficy-sync-state"


@pytest.fixture
def state_table(in_process_aws: str) -> str:
    """The stack's state table in moto: the one thing two containers share besides APSIS."""
    create_template_table("StateTable", STATE, in_process_aws)
    return STATE


def container(
    sim: ApsisSimulator, clock: ManualClock, secret: str | None = None, table: str = STATE, store: Any = None
) -> ApsisClient:
    """A client as another Lambda container holds it: nothing in memory shared with the others, the table's
    refusal record wired as connections.py wires it (and, given one, the SSM token store)."""
    secret = sim.client_secret if secret is None else secret
    client = ApsisClient(sim.url, sim.client_id, secret, section=SECTION, policy=FAST, clock=clock, token_store=store)
    client.token_hold.share(TokenRefusals(table, account_key(sim.url, sim.client_id), sim.client_id, secret))
    return client


def refuse_tokens(sim: ApsisSimulator, status: int = 401, body: str = "{}") -> None:
    sim.add_fault(
        path_regex="^/oauth/token$", status=status, body=body, content_type="application/json",
        headers={"Retry-After": "0"}, count=1000,
    )  # fmt: skip


@pytest.mark.parametrize(("status", "body", "error", "asked"), REFUSALS)
def test_a_refusal_holds_every_container_of_those_credentials(
    sim: ApsisSimulator, state_table: str, status: int, body: str, error: type[ApiError], asked: int
) -> None:
    """Held per container, fifty warm workers with a revoked key asked fifty times a minute: the account's other
    integrations got 429 for their tokens. Another container reads the refusal and does not ask; a minute on, it
    asks again."""
    clock = ManualClock()
    first, second = container(sim, clock), container(sim, clock)
    refuse_tokens(sim, status, body)
    with pytest.raises(error):
        first.list_sections()
    assert sim.calls()[TOKEN] == asked
    clock.advance(30)
    for _ in range(10):
        with pytest.raises(error) as caught:
            second.list_sections()
        assert type(caught.value) is error and caught.value.status == status
        assert not acknowledgeable(caught.value)
    assert sim.calls()[TOKEN] == asked  # not one token request from the second container
    assert second.calls["token"] == 0
    record = json.dumps(aws.client("dynamodb").scan(TableName=state_table)["Items"])
    assert sim.client_secret not in record and sim.client_id not in record  # hashes, never the credentials
    clock.advance(31)  # the hold's minute is over: the record no longer holds anyone
    sim.clear_faults()
    assert [s["discriminator"] for s in second.list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == asked + 1


def test_a_rotated_secret_asks_at_once_while_the_old_one_stays_held(sim: ApsisSimulator, state_table: str) -> None:
    """A new secret (connections.py builds a new client for it) is not held back by the old one's refusal; a
    container still on the old secret is."""
    clock = ManualClock()
    with pytest.raises(AuthError):
        container(sim, clock, secret="old-fake-secret").list_sections()  # the simulator refuses it: 401
    assert sim.calls()[TOKEN] == 1
    with pytest.raises(AuthError):
        container(sim, clock, secret="old-fake-secret").list_sections()
    assert sim.calls()[TOKEN] == 1
    assert [s["discriminator"] for s in container(sim, clock).list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == 2


def test_the_shared_hold_follows_the_environment(
    sim: ApsisSimulator, state_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local stack holds 1 s: the record says so too, so another container asks again after it."""
    monkeypatch.setenv("EFFICY_SYNC_TOKEN_HOLD_SECONDS", "2")
    clock = ManualClock()
    first, second = container(sim, clock), container(sim, clock)
    refuse_tokens(sim)
    with pytest.raises(AuthError):
        first.list_sections()
    with pytest.raises(AuthError):
        second.list_sections()
    assert sim.calls()[TOKEN] == 1
    clock.advance(3)
    sim.clear_faults()
    assert [s["discriminator"] for s in second.list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == 2


def test_a_record_that_cannot_be_read_or_is_dated_ahead_holds_nobody(sim: ApsisSimulator, state_table: str) -> None:
    """The record spares token requests; it never blocks a healthy account. A table that fails (here: absent)
    asks as before the record existed, the container's own hold still standing; a record whose end lies beyond
    any hold (a clock far ahead) is not read as one."""
    clock = ManualClock()
    broken = container(sim, clock, table="no-such-table")
    refuse_tokens(sim)
    for _ in range(3):
        with pytest.raises(AuthError):
            broken.list_sections()
    assert sim.calls()[TOKEN] == 1  # held in its own container, as before
    sim.clear_faults()
    assert [s["discriminator"] for s in container(sim, clock, table="no-such-table").list_sections()] == [SECTION]
    account = account_key(sim.url, sim.client_id)
    TokenRefusals(state_table, account, sim.client_id, sim.client_secret).save("auth", 401, "x", clock() + 3600)
    assert [s["discriminator"] for s in container(sim, clock).list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == 3


def test_the_lambdas_clients_share_the_record(
    sim: ApsisSimulator, state_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production wiring (connections.apsis_client, the secret in Secrets Manager; the CLI's factory): a
    second container's client does not ask APSIS after the first one's was refused."""
    monkeypatch.setenv("STATE_TABLE", state_table)
    monkeypatch.setenv("CONFIG_TABLE", "efficy-sync-config")
    monkeypatch.setenv("CONTACT_QUEUE_URL", "https://sqs.example/queue")
    settings.cache_clear()
    secrets.reset()
    creds = {"client_id": sim.client_id, "client_secret": sim.client_secret}
    aws.client("secretsmanager").create_secret(Name="efficy-sync/refusals/apsis", SecretString=json.dumps(creds))
    apsis = {**RAW["apsis"], "base_url": sim.url, "credentials_secret": "efficy-sync/refusals/apsis"}
    cfg = config_from_dict({**RAW, "integration_id": "refusals", "apsis": apsis})
    refuse_tokens(sim)
    try:
        for _ in range(3):  # three containers, each with nothing in memory
            monkeypatch.setattr(connections, "_apsis", {})
            with pytest.raises(AuthError):
                connections.apsis_client(cfg, FAST).list_sections()
        assert sim.calls()[TOKEN] == 1
        monkeypatch.setattr(_aws, "secret", {"efficy-sync/refusals/apsis": json.dumps(creds)}.__getitem__)
        with pytest.raises(AuthError):  # nor does an admin's command, built by the CLI's factory
            _aws.apsis_client(cfg).list_sections()
        assert sim.calls()[TOKEN] == 1
    finally:
        settings.cache_clear()
        secrets.reset()


def test_a_container_that_waited_for_another_s_token_request_reads_its_refusal(
    sim: ApsisSimulator, state_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the SSM token store one container asks APSIS while the others wait for its token (the refresh lease).
    A request refused brings no token: the waiters asked APSIS themselves after their wait, all of them at once.
    Now they read the refusal the holder recorded first."""
    monkeypatch.setattr(apsis_transport, "TOKEN_WAIT_SECONDS", 1.5)
    clock, prefix = ManualClock(), "/efficy-sync/apsis-token"
    holder_store = SsmTokenStore(prefix, sim.url, sim.client_id)
    assert holder_store.claim(60)  # the holder's lease: it is asking APSIS
    refuse_tokens(sim)
    waiter = container(sim, clock, store=SsmTokenStore(prefix, sim.url, sim.client_id))
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            waiter.list_sections()
        except BaseException as exc:  # handed to the test's thread
            raised.append(exc)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)  # the waiter read no refusal, found the lease taken and waits for the holder's token
    with pytest.raises(AuthError):
        container(sim, clock).list_sections()  # the holder's own request, refused and recorded
    holder_store.release()
    thread.join(10)
    assert [type(e) for e in raised] == [AuthError]
    assert sim.calls()[TOKEN] == 1  # the holder's request only


def test_a_record_longer_than_this_deployment_s_hold_is_not_honoured(
    sim: ApsisSimulator, state_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI in an admin's shell holds a refusal a minute (it has no EFFICY_SYNC_TOKEN_HOLD_SECONDS); the local
    stack's Lambdas hold 1 s. Its record held every page of the next full sync for the rest of the minute: the run
    failed (e2e, CI). A deployment honours a record only as far as its own hold goes."""
    clock = ManualClock()
    refuse_tokens(sim)
    with pytest.raises(AuthError):
        container(sim, clock).list_sections()  # the admin's command: a minute
    assert sim.calls()[TOKEN] == 1
    monkeypatch.setenv("EFFICY_SYNC_TOKEN_HOLD_SECONDS", "1")
    sim.clear_faults()
    clock.advance(2)
    assert [s["discriminator"] for s in container(sim, clock).list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == 2


def test_credentials_put_from_a_file_share_the_record_of_the_same_credentials(
    sim: ApsisSimulator, state_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client drops the newline a secret put from a file ends with (the factories), so the credentials it sends
    are those of a secret put without it: the refusal record is keyed by what is sent. Keyed by the secret's raw
    text, the container of one integration (its secret from a file) and an admin's command or another integration
    of the same API client (the secret typed) each asked APSIS again, and named another account than the budget."""
    monkeypatch.setenv("STATE_TABLE", state_table)
    monkeypatch.setenv("CONFIG_TABLE", "efficy-sync-config")
    monkeypatch.setenv("CONTACT_QUEUE_URL", "https://sqs.example/queue")
    settings.cache_clear()
    secrets.reset()
    from_file = {"client_id": f"{sim.client_id}\n", "client_secret": f"{sim.client_secret}\n"}
    name = "efficy-sync/from-file/apsis"
    aws.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(from_file))
    apsis = {**RAW["apsis"], "base_url": sim.url, "credentials_secret": name}
    cfg = config_from_dict({**RAW, "integration_id": "from-file", "apsis": apsis})
    refuse_tokens(sim)
    try:
        monkeypatch.setattr(connections, "_apsis", {})
        with pytest.raises(AuthError):
            connections.apsis_client(cfg, FAST).list_sections()
        assert sim.calls()[TOKEN] == 1
        with pytest.raises(AuthError):  # a container of the same credentials, typed without the newline
            container(sim, time.time).list_sections()  # type: ignore[arg-type]  # the clock the factories use
        assert sim.calls()[TOKEN] == 1
        monkeypatch.setattr(_aws, "secret", {name: json.dumps(from_file)}.__getitem__)
        with pytest.raises(AuthError):  # an admin's command reading the same secret
            _aws.apsis_client(cfg).list_sections()
        assert sim.calls()[TOKEN] == 1
    finally:
        settings.cache_clear()
        secrets.reset()


def test_a_successful_token_request_ends_the_hold_for_every_container(
    sim: ApsisSimulator, state_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An admin's command refused (its record holds a minute); the key fixed, a Lambda of the local stack (1 s hold:
    it does not honour a minute's record) gets a token. The record stayed: the admin's next command, or any
    container of a minute's hold, was refused without asking for the rest of the minute, the account recovered."""
    clock = ManualClock()
    refuse_tokens(sim)
    with pytest.raises(AuthError):
        container(sim, clock).list_sections()  # the admin's command: recorded for a minute
    sim.clear_faults()
    clock.advance(CLEAR_SKEW_SECONDS + 2)  # clearly after the refusal, whatever the two clocks' skew
    monkeypatch.setenv("EFFICY_SYNC_TOKEN_HOLD_SECONDS", "1")
    assert [s["discriminator"] for s in container(sim, clock).list_sections()] == [SECTION]  # the Lambda's token
    monkeypatch.delenv("EFFICY_SYNC_TOKEN_HOLD_SECONDS")

    assert [s["discriminator"] for s in container(sim, clock).list_sections()] == [SECTION]  # asks at once
    assert sim.calls()[TOKEN] == 3
    assert aws.client("dynamodb").scan(TableName=state_table)["Items"] == []  # the record is gone


def test_a_refusal_recorded_after_a_successful_request_was_sent_stands(sim: ApsisSimulator, state_table: str) -> None:
    """Which of the two APSIS answered last is unknown: the success does not erase a refusal recorded since it was
    sent (another container's 429 while it was in flight, a key revoked meanwhile), which holds the others still."""
    clock = ManualClock()
    record = TokenRefusals(state_table, account_key(sim.url, sim.client_id), sim.client_id, sim.client_secret)
    asked_at = clock()
    clock.advance(1)
    record.save("rate_limit", 429, "429 Too Many Requests", clock() + 60, refused_at=clock())

    record.clear(asked_at)  # the success of the request sent before that refusal

    assert record.load() == ("rate_limit", 429, "429 Too Many Requests", clock() + 60)
    with pytest.raises(RateLimited):
        container(sim, clock).list_sections()
    assert sim.calls().get(TOKEN, 0) == 0  # held: not asked
    record.clear(clock() + CLEAR_SKEW_SECONDS + 1)  # a success sent clearly after it ends it
    assert record.load() is None
    assert [s["discriminator"] for s in container(sim, clock).list_sections()] == [SECTION]


def test_a_record_that_cannot_be_cleared_does_not_fail_the_token_request(
    sim: ApsisSimulator, state_table: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The delete is best effort: a table that fails (here: absent) leaves the call and its token as they were,
    and the warning says what a failed clear leaves (it said "held in this container only", a save's words)."""
    client = container(sim, ManualClock(), table="no-such-table")
    with caplog.at_level("WARNING"):
        assert [s["discriminator"] for s in client.list_sections()] == [SECTION]
    assert sim.calls()[TOKEN] == 1
    warned = [r.getMessage() for r in caplog.records if "refusal record: clear failed" in r.getMessage()]
    assert warned and all("other containers keep the old refusal" in m for m in warned), caplog.text


def test_a_refusal_recorded_by_a_clock_a_little_behind_stands(sim: ApsisSimulator, state_table: str) -> None:
    """refused_at and asked_at come from two machines' clocks (a Lambda's, an admin's laptop's): a refusal recorded
    after a success's request was sent, by a clock two seconds behind, looked older than that request and the
    success deleted it, so every container asked again at once (the token limit's 10 a minute spent). Within
    CLEAR_SKEW_SECONDS of the request, a refusal stands; one clearly older is still cleared."""
    clock = ManualClock()
    record = TokenRefusals(state_table, account_key(sim.url, sim.client_id), sim.client_id, sim.client_secret)
    asked_at = clock()
    clock.advance(1)  # recorded a second after the request was sent, by a clock two seconds behind ours
    record.save("rate_limit", 429, "429 Too Many Requests", clock() + 60, refused_at=clock() - 2)

    record.clear(asked_at)

    assert record.load() == ("rate_limit", 429, "429 Too Many Requests", clock() + 60)
    record.clear(clock() + CLEAR_SKEW_SECONDS + 1)  # a request sent clearly after it ends it
    assert record.load() is None
