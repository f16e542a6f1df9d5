"""EfficyClient against the Efficy simulator over real HTTP, with faults injected through /_sim/faults."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import (
    ApiError,
    AuthError,
    EfficyBusinessError,
    EfficyUnavailable,
    RejectedValue,
)
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.consent import ANSWERED_AT, ASKED_AT
from efficy_sync_tools.sims.efficy import EfficySimulator

KEY = "efficy-test-key"
FAST = RetryPolicy(total=3, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
GATEWAY_PAGE = "<html><body><h1>504 Gateway Time-out</h1></body></html>"


@pytest.fixture
def client(sim: EfficySimulator) -> Iterator[EfficyClient]:
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy:
        yield efficy


def person(key: int, **extra: Any) -> dict[str, Any]:
    base = {"K_CONTACT": key, "NAME": f"Name{key}", "FIRSTNAME": "Jo", "EMAIL1": f"p{key}@example.com"}
    return {**base, "OPENED": "1", "ROBINSON": "0", "profiles": [], **extra}


def fault(sim: EfficySimulator, **spec: Any) -> None:
    response = requests.post(f"{sim.url}/_sim/faults", json={"path_regex": "^/crm/json", **spec}, timeout=5)
    assert response.status_code == 200, response.text


def http_calls(sim: EfficySimulator) -> dict[str, int]:
    return requests.get(f"{sim.url}/_sim/calls", timeout=5).json()


# ---- reading ------------------------------------------------------------------------------------------------
def test_pages_run_to_the_first_empty_page(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(k, profiles=[12] if k % 2 else []) for k in range(23, 0, -1)])
    pages = []
    while not pages or pages[-1]:  # the connector's paging rule: an empty page ends the export
        pages.append(client.list_persons_page(len(pages), 10, ["EMAIL1"]))
    pages.pop()
    assert [len(p) for p in pages] == [10, 10, 3]
    keys = [p["K_CONTACT"] for page in pages for p in page]
    assert keys == list(range(1, 24))
    first = dict(pages[0][0])
    asked, answered = first.pop(ASKED_AT), first.pop(ANSWERED_AT)  # our clock around the read, not Efficy's
    assert asked <= answered
    assert first == {
        "K_CONTACT": 1,
        "D_CHANGE": sim.get_person(1)["D_CHANGE"],
        "EMAIL1": "p1@example.com",
        "profiles": [12],
    }
    assert client.calls["list_persons_page"] == 4  # the empty page ends the export
    assert "profiles" not in client.list_persons_page(0, 5, include_profiles=False)[0]


def test_page_size_over_the_maximum_is_refused(client: EfficyClient) -> None:
    with pytest.raises(RejectedValue) as caught:
        client.list_persons_page(0, 501)
    assert caught.value.status == 400 and "invalid_parameter" in str(caught.value)


def test_many_persons_are_refetched_in_one_post(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(k, profiles=[12, 14] if k == 7 else []) for k in range(1, 51)])
    sim.delete_person(13)
    sim.delete_person(40)
    requests.delete(f"{sim.url}/_sim/calls", timeout=5)
    persons = client.get_persons(range(1, 51))
    assert sorted(persons) == [k for k in range(1, 51) if k not in (13, 40)]  # deleted ones are absent
    assert persons[7]["profiles"] == [12, 14] and persons[8]["profiles"] == []
    assert persons[7]["EMAIL1"] == "p7@example.com" and persons[7]["D_CHANGE"] == sim.get_person(7)["D_CHANGE"]
    assert http_calls(sim)["POST /crm/json"] == 1


def test_refetch_is_chunked_and_can_limit_fields(sim: EfficySimulator) -> None:
    sim.upsert_persons([person(k, SEGMENT="gold") for k in range(1, 46)])
    with EfficyClient(sim.url, KEY, policy=FAST, max_contexts=20) as efficy:
        persons = efficy.get_persons(list(range(1, 46)), fields=["SEGMENT"])
        assert efficy.calls["get_persons"] == 3
    assert len(persons) == 45
    assert set(persons[45]) == {"K_CONTACT", "D_CHANGE", "SEGMENT", "profiles", ASKED_AT, ANSWERED_AT}
    assert persons[1][ANSWERED_AT] < persons[45][ASKED_AT]  # a later chunk is a later read


def test_base_url_may_end_in_crm(sim: EfficySimulator) -> None:
    sim.upsert_persons([person(1)])
    with EfficyClient(f"{sim.url}/crm/", KEY, policy=FAST, customer="acme") as efficy:
        assert list(efficy.get_persons([1])) == [1]
        assert efficy.list_profiles()[0] == {"id": 12, "name": "Newsletter"}


def test_every_call_names_the_customer_on_a_server_of_several(sim: EfficySimulator) -> None:
    """The connector REST reads too: answered for the server's default customer, the records export would show
    our persons as absent (which confirms deletions) and another customer's as ours."""
    sim.upsert_persons([person(1, profiles=[12]), person(2)])
    sim.customer = "acme"
    try:
        with EfficyClient(sim.url, KEY, policy=FAST, customer="acme") as efficy:
            assert list(efficy.get_persons([1])) == [1]
            assert [r["K_CONTACT"] for r in efficy.list_persons_page(0, 10, ["K_CONTACT"])] == [1, 2]
            assert efficy.list_profiles()[0] == {"id": 12, "name": "Newsletter"}
            efficy.confirm_absent([3])  # the second read of a deletion: answered for our customer
        with EfficyClient(sim.url, KEY, policy=FAST) as efficy, pytest.raises(ApiError):
            efficy.list_persons_page(0, 10, ["K_CONTACT"])  # the simulator checks what it says it checks
    finally:
        sim.customer = None


def test_session_cookie_is_reused_and_renewed_after_expiry(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    before = sim.session_stats()
    client.get_persons([1])
    client.get_persons([1])
    sim.expire_sessions()
    assert list(client.get_persons([1])) == [1]  # 401 for the stale session, then a fresh one
    after = sim.session_stats()
    assert {k: after[k] - before[k] for k in after} == {"created": 2, "reused": 1, "expired": 1}


# ---- writing CRM profiles -----------------------------------------------------------------------------------
def test_leaving_a_profile_is_idempotent(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1, profiles=[12, 13])])
    client.remove_from_profile(1, 12)
    client.remove_from_profile(1, 12)  # not a member any more: fine
    assert client.get_persons([1])[1]["profiles"] == [13]
    with pytest.raises(EfficyBusinessError) as gone:
        client.remove_from_profile(404, 12)
    assert gone.value.code == "RECORD_NOT_FOUND"


def test_the_assumed_error_codes_are_settings(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1, profiles=[12])])
    assert list(client.get_persons([1, 404])) == [1]  # RECORD_NOT_FOUND: absent, by default
    client.remove_from_profile(1, 13)  # RELATION_NOT_FOUND: already the wanted state, by default
    with EfficyClient(
        sim.url, KEY, policy=FAST, not_found_codes=["GONE"], relation_missing_codes=["NO_LINK"]
    ) as other_codes:
        with pytest.raises(EfficyBusinessError) as unknown:
            other_codes.get_persons([1, 404])
        assert unknown.value.code == "RECORD_NOT_FOUND"
        with pytest.raises(EfficyBusinessError) as missing:
            other_codes.remove_from_profile(1, 13)
        assert missing.value.code == "RELATION_NOT_FOUND"


# ---- queries and look-ups -----------------------------------------------------------------------------------
def test_query_members_and_lookups(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1), person(2, EMAIL1="Shared@Example.com"), person(3, EMAIL1="shared@example.com")])
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": [3, 1]}])
    assert client.run_query(3618) == [1, 3]
    assert client.find_contacts_by_email("shared@example.com") == [2, 3]
    assert client.find_contacts_by_email("nobody@example.com") == []
    # APSIS holds the ASCII form of an internationalised domain (what we sent), Efficy the typed one: both found
    sim.upsert_persons([person(4, EMAIL1="jane@müller.de"), person(5, EMAIL1="jo@xn--mller-kva.de")])
    assert client.find_contacts_by_email("jane@xn--mller-kva.de") == [4]
    assert client.find_contacts_by_email("jo@müller.de") == [5]
    assert client.list_queries() == [{"id": 3618, "name": "VIP", "type": "dynamic"}]
    assert {"name": "EMAIL1", "type": "string", "label": "E-mail"} in client.list_fields()
    with pytest.raises(EfficyBusinessError) as caught:
        client.run_query(1)
    assert caught.value.code == "UNKNOWN_QUERY"


# ---- failures -----------------------------------------------------------------------------------------------
def test_bad_key_is_retried_once_then_auth_error(sim: EfficySimulator) -> None:
    with EfficyClient(sim.url, "wrong-key", policy=FAST) as efficy, pytest.raises(AuthError) as caught:
        efficy.get_persons([1])
    assert caught.value.status == 401
    assert http_calls(sim)["POST /crm/json"] == 2


def test_504_html_then_success(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    fault(sim, status=504, count=2, body=GATEWAY_PAGE, content_type="text/html")
    assert list(client.get_persons([1])) == [1]
    assert http_calls(sim)["POST /crm/json"] == 3


def test_504_forever_is_efficy_unavailable(sim: EfficySimulator, client: EfficyClient) -> None:
    fault(sim, status=504, body=GATEWAY_PAGE, content_type="text/html")
    with pytest.raises(EfficyUnavailable) as caught:
        client.get_persons([1])
    assert caught.value.status == 504 and caught.value.retryable
    assert "<html>" not in str(caught.value)
    assert http_calls(sim)["POST /crm/json"] == FAST.total + 1


def test_timeout_is_efficy_unavailable(sim: EfficySimulator) -> None:
    fault(sim, delay_ms=600)
    impatient = RetryPolicy(total=1, backoff_factor=0.01, backoff_jitter=0.0, read_timeout=0.2)
    with EfficyClient(sim.url, KEY, policy=impatient) as efficy, pytest.raises(EfficyUnavailable):
        efficy.get_persons([1])


def test_429_with_retry_after_zero_is_retried(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    fault(sim, status=429, count=1, headers={"Retry-After": "0"}, body="slow down")
    started = time.monotonic()
    assert list(client.get_persons([1])) == [1]
    assert time.monotonic() - started < 2
    assert http_calls(sim)["POST /crm/json"] == 2


ERROR_SHAPES = [
    ([{"@name": "exception", "#error": {"errorcode": "DBAC-1", "errorstring": "locked"}}], "DBAC-1"),
    ({"#error": {"errorcode": "CORE-7", "errorstring": "broken"}}, "CORE-7"),
    ({"error": True, "code": "RPC-9", "message": "bad", "detail": "worse"}, "RPC-9"),
    ([{"#id": "consult-1", "@name": "consult", "#error": "some failure"}], None),
    (
        [{"#id": "consult-1", "@name": "consult", "@func": [{"@name": "master", "#error": True, "#message": "no"}]}],
        None,
    ),
]


@pytest.mark.parametrize(("body", "code"), ERROR_SHAPES)
def test_every_http_200_error_shape_is_a_business_error(
    sim: EfficySimulator, client: EfficyClient, body: Any, code: str | None
) -> None:
    fault(sim, status=200, count=1, body=json.dumps(body), content_type="application/json")
    with pytest.raises(EfficyBusinessError) as caught:
        client.get_persons([1])
    assert caught.value.code == code
    assert caught.value.status == 200 and not caught.value.retryable


@pytest.mark.parametrize(
    ("body", "content_type"),
    [('[{"@name": "cons', "application/json"), ("<html><body>Maintenance</body></html>", "text/html")],
)
def test_a_200_that_is_not_json_is_an_outage_retried(
    sim: EfficySimulator, client: EfficyClient, body: str, content_type: str
) -> None:
    """A body cut short or a web page in front of Efficy (maintenance, a sign-in page): typed as Efficy's business
    error, the state machine did not retry it and a full-sync page failed at once."""
    fault(sim, status=200, count=100, body=body, content_type=content_type)
    with pytest.raises(EfficyUnavailable) as caught:
        client.get_persons([1])
    assert caught.value.retryable


def test_json_after_a_byte_order_mark_is_read(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    answer = client._post_rpc("probe", [client._consult_context(1, ["K_CONTACT"])])  # the real answer, as sent
    fault(sim, status=200, count=1, body="\ufeff" + json.dumps(answer), content_type="application/json; charset=utf-8")
    assert client.get_persons([1], ["K_CONTACT"])[1]["K_CONTACT"] == 1


def test_session_timeout_inside_a_200_answer_logs_on_again(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    expired = [{"@name": "exception", "#error": {"errorcode": "FRMK-2612", "errorstring": "Session timeout"}}]
    fault(sim, status=200, count=1, body=json.dumps(expired), content_type="application/json")
    assert list(client.get_persons([1])) == [1]


def test_client_states_content_length_which_strict_efficy_requires(sim: EfficySimulator, client: EfficyClient) -> None:
    sim.upsert_persons([person(1)])
    assert sim.require_content_length
    assert list(client.get_persons([1])) == [1]
    chunked = requests.post(
        f"{sim.url}/crm/json", data=iter([b"[]"]), headers={"X-Efficy-ApiKey": KEY}, timeout=5
    )  # what a streaming client would send
    assert chunked.json()[0]["#error"]["errorcode"] == "INVALID_JSON"


def test_addresses_in_efficy_error_texts_are_masked(sim: EfficySimulator, client: EfficyClient) -> None:
    leak = [{"@name": "exception", "#error": {"errorcode": "X-1", "errorstring": "bad recipient jo.doe@example.com"}}]
    fault(sim, status=200, count=1, body=json.dumps(leak), content_type="application/json")
    with pytest.raises(EfficyBusinessError) as caught:
        client.find_contacts_by_email("jo.doe@example.com")
    assert "jo.doe@example.com" not in str(caught.value) and "j***@example.com" in str(caught.value)
