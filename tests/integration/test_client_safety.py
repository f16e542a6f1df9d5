"""Issue 11 (data safety) and 16.4 at the clients, over real HTTP against the simulators.

- a person is absent only on positive evidence: a not-found code or an empty record, confirmed by the records
  export; an error text that merely sounds like "not found" is an error (11.1);
- a query or look-up answer that cannot be read is an error, never an empty list (a tag would lose its members);
- a missing record is answered as Efficy does: HTTP 200 with the error in the body (JSON-RPC), 404 (REST) (16.4);
- a `Retry-After` sleep is capped, and no call or retry starts past the invocation's deadline (11.6);
- the factories carry every setting of the integration's config (11.7).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import EfficyBusinessError, EfficyInconclusive, OutOfTime, RateLimited
from efficy_sync.clients.http import RetryPolicy, deadline
from efficy_sync.config import IntegrationConfig
from efficy_sync_tools.sims.apsis import ApsisSimulator
from efficy_sync_tools.sims.efficy import EfficySimulator

KEY = "efficy-test-key"
FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
SECTION = "com.apsis1.sections.default"


@pytest.fixture
def client(sim: EfficySimulator) -> Iterator[EfficyClient]:
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy:
        yield efficy


def person(key: int, **extra: Any) -> dict[str, Any]:
    base = {"K_CONTACT": key, "NAME": f"Name{key}", "FIRSTNAME": "Jo", "EMAIL1": f"p{key}@example.com"}
    return {**base, "OPENED": "1", "ROBINSON": "0", "profiles": [12], **extra}


def answer(sim: EfficySimulator | ApsisSimulator, path_regex: str, body: Any, **spec: Any) -> None:
    """The next matching call is answered `body` (HTTP 200, JSON) instead of the simulator's own answer."""
    fault = {"status": 200, "count": 1, "body": json.dumps(body), "content_type": "application/json", **spec}
    response = requests.post(f"{sim.url}/_sim/faults", json={"path_regex": path_regex, **fault}, timeout=5)
    assert response.status_code == 200, response.text


def calls(sim: EfficySimulator) -> dict[str, int]:
    return requests.get(f"{sim.url}/_sim/calls", timeout=5).json()


def consult(key: int, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "#id": f"consult-{key}",
            "@name": "consult",
            "@func": [
                {"@name": "master", "#result": {"#class": "dataset", "#data": rows}},
                {"@name": "detail", "#result": {"#class": "dataset", "#data": []}},
            ],
        }
    ]


# ---- absence needs positive evidence (11.1) -------------------------------------------------------------------
@pytest.mark.parametrize(
    "text", ["Field LANGUAGE does not exist", "Query not found", "no such record in the index", "Cont 1 not found"]
)
def test_an_error_text_that_sounds_like_not_found_is_an_error(
    sim: EfficySimulator, client: EfficyClient, text: str
) -> None:
    sim.upsert_persons([person(1)])
    answer(sim, "^/crm/json", [{"#error": {"errorstring": text}}])
    with pytest.raises(EfficyBusinessError) as caught:
        client.get_persons([1])
    assert caught.value.code is None and not caught.value.about_person


def test_a_missing_person_is_absent_once_the_records_export_agrees(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    assert list(client.get_persons([1, 404])) == [1]
    assert calls(sim)["GET /v1/records/{entity}"] == 1  # the confirming read, only because one was missing


def test_a_not_found_code_the_records_export_contradicts_is_inconclusive(
    sim: EfficySimulator, client: EfficyClient
) -> None:
    sim.upsert_persons([person(1)])
    answer(sim, "^/crm/json", [{"@name": "exception", "#error": {"errorcode": "RECORD_NOT_FOUND", "errorstring": "x"}}])
    with pytest.raises(EfficyInconclusive):
        client.get_persons([1])


def test_an_empty_record_is_absence_only_when_confirmed(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    answer(sim, "^/crm/json", consult(1, []))
    with pytest.raises(EfficyInconclusive):
        client.get_persons([1])
    answer(sim, "^/crm/json", consult(2, []))
    assert client.get_persons([2]) == {}


def test_a_records_export_that_ignores_the_ids_filter_proves_nothing(
    sim: EfficySimulator, client: EfficyClient
) -> None:
    sim.upsert_persons([person(1)])
    answer(sim, "^/v1/records", {"records": [{"K_CONTACT": 1}], "page": 0, "page_size": 1})
    with pytest.raises(EfficyInconclusive):
        client.get_persons([404])


@pytest.mark.parametrize(
    "body",
    [
        [{"#id": "api-query", "@name": "api", "@func": [{"@name": "query"}]}],  # no dataset at all
        [
            {
                "#id": "api-query",
                "@name": "api",
                "@func": [{"@name": "query", "#result": {"#class": "dataset", "#data": [{"NAME": "Doe"}]}}],
            }
        ],  # rows without K_CONTACT
    ],
)
def test_a_query_answer_that_cannot_be_read_is_an_error_not_an_empty_query(
    sim: EfficySimulator, client: EfficyClient, body: Any
) -> None:
    sim.upsert_persons([person(1)])
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": [1]}])
    answer(sim, "^/crm/json", body)
    with pytest.raises(EfficyBusinessError) as caught:
        client.run_query(3618)
    assert caught.value.code == "INVALID_RESPONSE"
    assert client.run_query(3618) == [1]


# ---- a missing record as Efficy answers it (16.4) ---------------------------------------------------------------
def test_a_missing_record_is_200_with_the_error_in_json_rpc_and_404_in_rest(sim: EfficySimulator) -> None:
    sim.upsert_persons([person(1)])
    rpc = requests.post(
        f"{sim.url}/crm/json",
        json=[{"#id": "c", "@name": "consult", "entity": "Cont", "key": 404, "@func": [{"@name": "master"}]}],
        headers={"X-Efficy-ApiKey": KEY},
        timeout=5,
    )
    assert rpc.status_code == 200
    assert rpc.json()[0]["#error"]["errorcode"] == "RECORD_NOT_FOUND"
    rest = requests.get(f"{sim.url}/v1/records/contacts/404", headers={"X-API-Key": KEY}, timeout=5)
    assert rest.status_code == 404 and rest.json()["error"]["code"] == "not_found"
    found = requests.get(
        f"{sim.url}/v1/records/contacts/1", params={"include": "profiles"}, headers={"X-API-Key": KEY}, timeout=5
    )
    assert found.status_code == 200 and found.json()["K_CONTACT"] == 1 and found.json()["profiles"] == [12]


# ---- Retry-After and the deadline (11.6) -------------------------------------------------------------------------
class _RecordedSleeps:
    """`time` as the retry code sees it, with sleeps recorded instead of slept (a huge Retry-After must not hang
    a test); the simulators' threads keep the real module."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    import urllib3.util.retry
    from efficy_sync.clients import http

    fake = _RecordedSleeps()
    monkeypatch.setattr(urllib3.util.retry, "time", fake)
    monkeypatch.setattr(http, "time", fake)
    return fake.asked


def test_a_huge_retry_after_is_capped(sim: EfficySimulator, sleeps: list[float]) -> None:
    sim.upsert_persons([person(1)])
    requests.post(
        f"{sim.url}/_sim/faults",
        json={"path_regex": "^/crm/json", "status": 429, "count": 2, "headers": {"Retry-After": "86400"}},
        timeout=5,
    ).raise_for_status()
    policy = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, retry_after_max=2.0)
    with EfficyClient(sim.url, KEY, policy=policy) as efficy:
        assert list(efficy.get_persons([1])) == [1]
    assert sleeps == [2.0, 2.0]


def test_no_retry_starts_past_the_deadline(sim: EfficySimulator, sleeps: list[float]) -> None:
    requests.post(
        f"{sim.url}/_sim/faults",
        json={"path_regex": "^/crm/json", "status": 429, "headers": {"Retry-After": "20"}},
        timeout=5,
    ).raise_for_status()
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy:
        with deadline(10), pytest.raises(OutOfTime) as caught:
            efficy.get_persons([1])
        assert caught.value.retryable
        assert sleeps == []  # the 20 s wait would have ended past the deadline: not slept
        assert calls(sim)["POST /crm/json"] == 1
        with deadline(0.5), pytest.raises(OutOfTime):
            efficy.get_persons([1])
        assert calls(sim)["POST /crm/json"] == 1  # too little time left to start a call at all
        with pytest.raises(RateLimited):  # without a deadline, the retries run out as before
            efficy.get_persons([1])
    assert sleeps and max(sleeps) <= FAST.retry_after_max


def test_apsis_retry_after_is_capped_and_bounded_by_the_deadline(sleeps: list[float]) -> None:
    with ApsisSimulator(client_id="cap", client_secret="cap-secret") as apsis_sim:
        apsis_sim.add_fault(path_regex="/audience/sections$", status=429, count=1, headers={"Retry-After": "99999"})
        policy = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, retry_after_max=1.5)
        apsis = ApsisClient(apsis_sim.url, "cap", "cap-secret", section=SECTION, policy=policy)
        assert apsis.list_sections()
        assert sleeps == [1.5]
        apsis_sim.add_fault(path_regex="/audience/sections$", status=429, count=1, headers={"Retry-After": "30"})
        with deadline(2), pytest.raises(OutOfTime):  # the capped 1.5 s wait would leave too little time
            apsis.list_sections()
        assert sleeps == [1.5]


# ---- one factory per client (11.7) ------------------------------------------------------------------------------
def acme() -> IntegrationConfig:
    return IntegrationConfig.model_validate(
        {
            "integration_id": "acme",
            "efficy": {
                "base_url": "https://acme.example/crm",
                "api_key_secret": "efficy-sync/acme/efficy",
                "webhook_secret_secret": "efficy-sync/acme/webhook",
                "customer": "acme",
                "profile_detail": "Prof2",
                "error_codes": {"not_found": ["GONE"], "relation_missing": ["NO_LINK"], "relation_exists": ["DUP"]},
            },
            "apsis": {
                "base_url": "https://apsis.example",
                "section": SECTION,
                "keyspace": "com.apsis1.keyspaces.crm-id",
                "credentials_secret": "efficy-sync/acme/apsis",
                "optout_token_secret": "efficy-sync/acme/optout",
                "profile_tags_path": "/tags/{keyspace}/{key}/{section}",
            },
        }
    )


def test_the_factories_carry_every_setting_of_the_config() -> None:
    cfg = acme()
    efficy = EfficyClient.from_config(cfg, api_key="k", policy=FAST)
    assert (efficy.not_found_codes, efficy.relation_missing_codes) == ({"GONE"}, {"NO_LINK"})
    assert (efficy.customer, efficy.profile_detail, efficy.policy) == ("acme", "Prof2", FAST)
    apsis = ApsisClient.from_config(cfg, credentials={"client_id": "i", "client_secret": "s"}, policy=FAST)
    assert (apsis.profile_tags_path, apsis.section, apsis.policy) == ("/tags/{keyspace}/{key}/{section}", SECTION, FAST)


def test_the_cli_builds_its_clients_with_the_factories(monkeypatch: pytest.MonkeyPatch) -> None:
    from efficy_sync_tools.commands import _aws

    secrets = {"efficy-sync/acme/efficy": "k", "efficy-sync/acme/apsis": '{"client_id": "i", "client_secret": "s"}'}
    monkeypatch.setattr(_aws, "secret", secrets.__getitem__)
    efficy, apsis = _aws.efficy_client(acme()), _aws.apsis_client(acme())
    assert efficy.not_found_codes == {"GONE"} and efficy.relation_missing_codes == {"NO_LINK"}
    assert apsis.profile_tags_path == "/tags/{keyspace}/{key}/{section}"


# ---- a part of an answer is not the whole of it ----------------------------------------------------------------
PART = {"total": 2, "hasMore": True, "next": "/page/2"}


@pytest.mark.parametrize("marker", [{"hasMore": True}, {"total": 2}, {"next": "/page/2"}, PART])
def test_a_profile_list_that_says_it_is_one_page_of_several_is_refused(
    sim: EfficySimulator, client: EfficyClient, marker: dict[str, Any]
) -> None:
    sim.upsert_persons([person(1, profiles=[12, 13])])
    body = consult(1, [person(1)])
    body[0]["@func"][1]["#result"]["#data"] = {"data": [{"K_PROFILE": 13}], **marker}  # Efficy U's nesting
    answer(sim, "^/crm/json", body)
    with pytest.raises(EfficyBusinessError) as caught:  # not "a member of 13 only": an opt-out from 12
        client.get_persons([1])
    assert caught.value.code == "INVALID_RESPONSE"
    whole = consult(1, [person(1)])
    whole[0]["@func"][1]["#result"]["#data"] = {"data": [{"K_PROFILE": 12}, {"K_PROFILE": 13}], "total": 2}
    answer(sim, "^/crm/json", whole)
    assert client.get_persons([1])[1]["profiles"] == [12, 13]


def test_a_query_answer_that_is_one_page_of_several_is_refused(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(k) for k in range(1, 11)])
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": list(range(1, 11))}])
    rows = [{"K_CONTACT": k} for k in (1, 2, 3)]
    answer(
        sim,
        "^/crm/json",
        [
            {
                "@name": "query",
                "@func": [{"@name": "query", "#result": {"#class": "dataset", "#data": {"data": rows, **PART}}}],
            }
        ],
    )
    with pytest.raises(EfficyBusinessError):  # seven former members would lose their tag
        client.run_query(3618)
    assert client.run_query(3618) == list(range(1, 11))


@pytest.mark.parametrize(
    ("export", "error"),
    [
        ({"records": [], "total": 1}, EfficyInconclusive),
        ({"records": [], "error": {"code": "forbidden", "message": "no rights"}}, EfficyBusinessError),
    ],
)
def test_a_confirming_read_that_contradicts_itself_confirms_no_absence(
    sim: EfficySimulator, client: EfficyClient, export: dict[str, Any], error: type[Exception]
) -> None:
    sim.upsert_persons([person(1)])
    answer(sim, "^/crm/json", consult(1, []))  # the first read: an empty record
    answer(sim, "^/v1/records", export)  # the second: "none listed", yet counted or in error
    with pytest.raises(error):
        client.get_persons([1])


def test_a_query_answer_with_lower_case_columns_lists_its_members(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(k) for k in (1, 2)])
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": [1, 2]}])
    rows = [{"k_contact": 1}, {"K_Contact": "2"}]
    answer(
        sim,
        "^/crm/json",
        [{"@name": "query", "@func": [{"@name": "query", "#result": {"#class": "dataset", "#data": rows}}]}],
    )
    assert client.run_query(3618) == [1, 2]
