"""APSIS One tokens shared through SSM (efficy_sync/apsis_tokens.py): APSIS allows 10 token requests a minute per
account, so clients of one API client (other containers, CLI runs) use the token one of them fetched. Real HTTP
to the APSIS simulator, SSM in moto."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from efficy_sync import aws
from efficy_sync.apsis_tokens import SsmTokenStore, parameter_name, token_store
from efficy_sync.clients import apsis_transport
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_apsis_client import FAST, FIRSTNAME, SECTION, TOKEN

PREFIX = "/efficy-sync/apsis-token"


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    started = ApsisSimulator().start()
    yield started
    started.stop()


@pytest.fixture
def container(sim: ApsisSimulator, in_process_aws: str) -> Callable[..., ApsisClient]:
    """A new client as a new Lambda container or CLI run builds it: nothing in memory, the stack's store."""

    def build(store: Any = "ssm", client_id: str | None = None) -> ApsisClient:
        cid = client_id or sim.client_id
        if store == "ssm":
            store = SsmTokenStore(PREFIX, sim.url, cid)
        return ApsisClient(sim.url, cid, sim.client_secret, section=SECTION, policy=FAST, token_store=store)

    return build


def _tokens(sim: ApsisSimulator) -> int:
    return sim.calls().get(TOKEN, 0)


def test_containers_of_one_api_client_ask_apsis_for_one_token(
    sim: ApsisSimulator, container: Callable[..., ApsisClient]
) -> None:
    for key in range(5):  # five containers, one call each
        container().upsert_attributes(str(key), {FIRSTNAME: f"P{key}"})
    assert _tokens(sim) == 1
    parameter = aws.client("ssm").get_parameter(Name=parameter_name(PREFIX, sim.url, sim.client_id))["Parameter"]
    assert parameter["Type"] == "SecureString"
    described = aws.client("ssm").describe_parameters()["Parameters"]
    assert [p["Tier"] for p in described] == ["Intelligent-Tiering"]  # a JWT over 4 KB still fits
    assert parameter["Name"].startswith(PREFIX + "/")
    assert sim.client_id not in parameter["Name"]
    stored = aws.client("ssm").get_parameter(Name=parameter["Name"], WithDecryption=True)["Parameter"]["Value"]
    assert sim.client_secret not in stored  # the token, never the client's secret


def test_another_api_client_gets_a_token_of_its_own(sim: ApsisSimulator, container: Callable[..., ApsisClient]) -> None:
    assert parameter_name(PREFIX, sim.url, "client-a") != parameter_name(PREFIX, sim.url, "client-b")
    assert parameter_name(PREFIX, sim.url, "a") != parameter_name(PREFIX, sim.url + "/other", "a")
    container().list_sections()
    other = SsmTokenStore(PREFIX, sim.url, "another-client")
    assert other.load() is None


def test_a_revoked_token_is_replaced_once_and_the_next_containers_use_the_new_one(
    sim: ApsisSimulator, container: Callable[..., ApsisClient]
) -> None:
    first = container()
    first.list_sections()
    sim.revoke_tokens()
    first.list_sections()  # 401: the token is refused, a new one fetched and shared
    assert _tokens(sim) == 2
    for _ in range(3):
        container().list_sections()
    assert _tokens(sim) == 2


def test_a_shared_token_past_its_refresh_time_is_not_used(
    sim: ApsisSimulator, container: Callable[..., ApsisClient]
) -> None:
    container().list_sections()
    store = SsmTokenStore(PREFIX, sim.url, sim.client_id)
    token, _ = store.load() or ("", 0.0)
    store.save(token, 1.0)  # refresh time long gone
    container().list_sections()
    assert _tokens(sim) == 2
    assert store.load() is not None and store.load()[1] > 1.0  # type: ignore[index]


def test_discard_keeps_a_newer_token_another_client_saved(sim: ApsisSimulator, in_process_aws: str) -> None:
    store = SsmTokenStore(PREFIX, sim.url, sim.client_id)
    store.save("newer", 2e9)
    store.discard("older")
    assert store.load() == ("newer", 2e9)
    store.discard("newer")
    assert store.load() is None
    store.discard("newer")  # already gone: nothing to do


def test_an_unreadable_value_is_no_token(sim: ApsisSimulator, container: Callable[..., ApsisClient]) -> None:
    name = parameter_name(PREFIX, sim.url, sim.client_id)
    aws.client("ssm").put_parameter(Name=name, Value="not json", Type="SecureString")
    container().list_sections()
    assert _tokens(sim) == 1
    assert SsmTokenStore(PREFIX, sim.url, sim.client_id).load() is not None  # overwritten with the token


class _FailingStore:
    """What no permission or a throttled SSM looks like to the client."""

    def __init__(self) -> None:
        self.attempts = 0

    def _fail(self, *args: Any) -> Any:
        self.attempts += 1
        raise RuntimeError("AccessDeniedException")

    load = save = discard = claim = release = _fail


def test_a_failing_store_costs_a_token_request_never_the_call(
    sim: ApsisSimulator, container: Callable[..., ApsisClient], caplog: pytest.LogCaptureFixture
) -> None:
    store = _FailingStore()
    client = container(store=store)
    client.upsert_attributes("1", {FIRSTNAME: "Ann"})
    client.upsert_attributes("2", {FIRSTNAME: "Bob"})
    assert _tokens(sim) == 1 and store.attempts == 3  # load, claim, then save; the client keeps its token
    assert {"1", "2"} <= {p["key"] for p in sim.profiles()}


def test_no_prefix_no_store() -> None:
    assert token_store("", "https://api.apsis.one", "id") is None
    assert token_store("/", "https://api.apsis.one", "id") is None
    assert isinstance(token_store("/s/apsis-token", "https://api.apsis.one", "id"), SsmTokenStore)


# ---- one client at a time asks APSIS for a new token (the refresh lease) -------------------------------------


@pytest.fixture
def atomic_ssm_puts(monkeypatch: pytest.MonkeyPatch) -> None:
    """SSM creates a parameter only if absent, atomically (PutParameter without Overwrite); moto's check and
    insert can interleave between threads, which AWS's cannot. The lease's tests need AWS's behaviour."""
    from moto.ssm.models import SimpleSystemManagerBackend

    lock = threading.Lock()
    original = SimpleSystemManagerBackend.put_parameter

    def put_parameter(self: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(SimpleSystemManagerBackend, "put_parameter", put_parameter)


class _NoLease(SsmTokenStore):
    """The store as it was before the lease: every client may ask APSIS."""

    def claim(self, seconds: float) -> bool:
        return True

    def release(self) -> None:
        return None


def _start_together(sim: ApsisSimulator, build: Callable[[], ApsisClient], n: int) -> list[BaseException]:
    """`n` containers built and calling APSIS at the same moment; the errors they met."""
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def one() -> None:
        client = build()
        barrier.wait()
        try:
            client.list_sections()
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def test_containers_starting_together_ask_apsis_for_one_token(
    sim: ApsisSimulator, container: Callable[..., ApsisClient], atomic_ssm_puts: None
) -> None:
    """A full sync's pages start together, and every container reaches the shared token's refresh time at once:
    one asks APSIS (10 token requests a minute per account), the others wait for its token."""
    sim.add_fault(path_regex=r"^/oauth/token$", delay_ms=400)  # a token takes a while: all eight find none
    assert _start_together(sim, container, 8) == []
    assert _tokens(sim) == 1
    assert SsmTokenStore(PREFIX, sim.url, sim.client_id).load() is not None
    lease = parameter_name(PREFIX, sim.url, sim.client_id) + "-refresh"
    with pytest.raises(aws.client("ssm").exceptions.ParameterNotFound):
        aws.client("ssm").get_parameter(Name=lease)  # released by its holder

    # the same start without the lease: each container asks APSIS for a token of its own
    aws.client("ssm").delete_parameter(Name=parameter_name(PREFIX, sim.url, sim.client_id))
    before = _tokens(sim)
    no_lease = lambda: container(store=_NoLease(PREFIX, sim.url, sim.client_id))  # noqa: E731
    assert _start_together(sim, no_lease, 8) == []
    assert _tokens(sim) - before == 8


def _hand_fetched_token(sim: ApsisSimulator) -> str:
    body = {"grant_type": "client_credentials", "client_id": sim.client_id, "client_secret": sim.client_secret}
    return str(requests.post(f"{sim.url}/oauth/token", json=body, timeout=10).json()["access_token"])


class _Refused(SsmTokenStore):
    """The store, telling the test when its client found the lease held (and started waiting)."""

    refused = threading.Event()

    def claim(self, seconds: float) -> bool:
        taken = super().claim(seconds)
        if not taken:
            self.refused.set()
        return taken


def test_a_client_waits_for_the_token_the_lease_holder_saves(
    sim: ApsisSimulator, container: Callable[..., ApsisClient], atomic_ssm_puts: None
) -> None:
    holder = SsmTokenStore(PREFIX, sim.url, sim.client_id)
    assert holder.claim(60) is True
    store = _Refused(PREFIX, sim.url, sim.client_id)
    store.refused.clear()
    waiting = threading.Thread(target=lambda: container(store=store).list_sections())
    waiting.start()
    assert store.refused.wait(timeout=10)  # the client found the lease held: it waits for the holder's token
    holder.save(_hand_fetched_token(sim), time.time() + 3600)
    holder.release()
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    assert _tokens(sim) == 1  # the holder's: the waiting client asked for none


def test_a_lease_whose_holder_never_saves_costs_a_wait_then_a_token_of_ones_own(
    sim: ApsisSimulator,
    container: Callable[..., ApsisClient],
    atomic_ssm_puts: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(apsis_transport, "TOKEN_WAIT_SECONDS", 1.0)
    assert SsmTokenStore(PREFIX, sim.url, sim.client_id).claim(60) is True  # and the holder is never heard of again
    container().upsert_attributes("1", {FIRSTNAME: "Ann"})
    assert _tokens(sim) == 1
    assert "1" in {p["key"] for p in sim.profiles()}


def test_a_lapsed_lease_is_taken_over_at_once(
    sim: ApsisSimulator,
    container: Callable[..., ApsisClient],
    atomic_ssm_puts: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lease = parameter_name(PREFIX, sim.url, sim.client_id) + "-refresh"
    aws.client("ssm").put_parameter(Name=lease, Value=json.dumps({"until": time.time() - 1}), Type="String")
    waits: list[int] = []
    original = apsis_transport.ApsisTransport._wait_for_shared
    monkeypatch.setattr(
        apsis_transport.ApsisTransport, "_wait_for_shared", lambda self: waits.append(1) or original(self)
    )
    container().list_sections()
    assert _tokens(sim) == 1 and waits == []  # no wait for a holder long gone
    with pytest.raises(aws.client("ssm").exceptions.ParameterNotFound):
        aws.client("ssm").get_parameter(Name=lease)
    aws.client("ssm").put_parameter(Name=lease, Value="not json", Type="String", Overwrite=True)
    assert SsmTokenStore(PREFIX, sim.url, sim.client_id).claim(60) is True  # an unreadable lease has lapsed


def test_a_client_near_its_invocation_s_deadline_does_not_wait_for_the_holder(
    sim: ApsisSimulator, container: Callable[..., ApsisClient], atomic_ssm_puts: None
) -> None:
    from efficy_sync.clients.http import deadline

    assert SsmTokenStore(PREFIX, sim.url, sim.client_id).claim(60) is True  # held by a client still fetching
    store = _Refused(PREFIX, sim.url, sim.client_id)
    store.refused.clear()
    with deadline(3.0):  # 3 s left: waiting up to 10 s for the holder would leave none for the call
        container(store=store).list_sections()
    assert store.refused.is_set() and _tokens(sim) == 1  # found the lease held, and asked for its own in time


def test_a_401_a_fresh_token_does_not_fix_costs_no_token_per_call(sim: ApsisSimulator) -> None:
    """Every call answered 401 though its token was just issued (the API does not take this client's tokens:
    another account or region, a gateway in front). One new token, then none for a minute: a token per call
    spent the endpoint's 10 a minute per account at the first worker batch, for every container."""
    from efficy_sync.clients.errors import AuthError

    sim.add_fault(path_regex="^/audience/sections$", status=401, count=100)
    client = ApsisClient(sim.url, sim.client_id, sim.client_secret, section=SECTION, policy=FAST)
    for _ in range(8):
        with pytest.raises(AuthError):
            client.list_sections()
    assert _tokens(sim) == 2


class _CannotDiscard(_FailingStore):
    """A store that reads and saves, but whose delete fails (SSM throttled, no DeleteParameter permission)."""

    def __init__(self) -> None:
        self.value: tuple[str, float] | None = None

    def load(self) -> tuple[str, float] | None:
        return self.value

    def save(self, token: str, refresh_at: float) -> None:
        self.value = (token, refresh_at)

    def claim(self, seconds: float) -> bool:
        return True

    def release(self) -> None:
        return None


def test_a_revoked_token_the_store_cannot_discard_is_not_read_back(
    sim: ApsisSimulator, container: Callable[..., ApsisClient]
) -> None:
    """The refused token stayed in the store and came back at the next read: every call failed until the
    store's delete worked. A failing store costs a token request, never the call."""
    client = container(_CannotDiscard())
    assert client.list_sections()
    sim.revoke_tokens()
    assert [s["discriminator"] for s in client.list_sections()] == [SECTION]
    assert _tokens(sim) == 2
