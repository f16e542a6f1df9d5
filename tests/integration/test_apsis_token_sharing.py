"""APSIS One tokens shared through SSM (efficy_sync/apsis_tokens.py): APSIS allows 10 token requests a minute per
account, so clients of one API client (other containers, CLI runs) use the token one of them fetched. Real HTTP
to the APSIS simulator, SSM in moto."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from efficy_sync import aws
from efficy_sync.apsis_tokens import SsmTokenStore, parameter_name, token_store
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

    load = save = discard = _fail


def test_a_failing_store_costs_a_token_request_never_the_call(
    sim: ApsisSimulator, container: Callable[..., ApsisClient], caplog: pytest.LogCaptureFixture
) -> None:
    store = _FailingStore()
    client = container(store=store)
    client.upsert_attributes("1", {FIRSTNAME: "Ann"})
    client.upsert_attributes("2", {FIRSTNAME: "Bob"})
    assert _tokens(sim) == 1 and store.attempts == 2  # load, then save; the client keeps its token
    assert {"1", "2"} <= {p["key"] for p in sim.profiles()}


def test_no_prefix_no_store() -> None:
    assert token_store("", "https://api.apsis.one", "id") is None
    assert token_store("/", "https://api.apsis.one", "id") is None
    assert isinstance(token_store("/s/apsis-token", "https://api.apsis.one", "id"), SsmTokenStore)
