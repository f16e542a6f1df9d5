"""What the real Efficy may answer that our simulator does not (contracts/efficy.md §1, §3, §5): the client reads
it over real HTTP (the simulator's fault injection serves the crafted answer), and a membership it cannot read
is *unknown*, never "member of nothing" (which would opt the person out of every mapped subscription)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import EfficyBusinessError
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.mapping import Desired, map_person
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.unit.consent_configs import consent_config

KEY = "efficy-test-key"
FAST = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
MASTER = {"K_CONTACT": 7, "NAME": "N", "EMAIL1": "p7@example.com", "OPENED": "1", "ROBINSON": "0"}
CFG = consent_config()


@pytest.fixture
def client(sim: EfficySimulator) -> Iterator[EfficyClient]:
    with EfficyClient(sim.url, KEY, policy=FAST) as efficy:
        yield efficy


def answer(sim: EfficySimulator, path: str, body: Any) -> None:
    """The next call to `path` answers `body` with 200, as the real Efficy would."""
    spec = {"path_regex": path, "status": 200, "count": 1, "body": json.dumps(body), "content_type": "application/json"}
    assert requests.post(f"{sim.url}/_sim/faults", json=spec, timeout=5).status_code == 200


def consult(detail: Any, master: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    funcs: list[dict[str, Any]] = [
        {"@name": "master", "#result": {"#class": "dataset", "#data": [master or MASTER]}},
    ]
    if detail is not None:
        funcs.append({"@name": "detail", "detail": "Prof", "#result": detail})
    return [{"@name": "consult", "entity": "Cont", "key": 7, "@func": funcs}]


def dataset(rows: Any) -> dict[str, Any]:
    return {"#class": "dataset", "#data": rows}


def mapped(person: dict[str, Any]) -> Desired:
    desired = map_person(CFG, person)
    assert isinstance(desired, Desired)
    return desired


def get_one(sim: EfficySimulator, client: EfficyClient, body: Any) -> dict[str, Any]:
    answer(sim, "^/crm/json", body)
    return client.get_persons([7])[7]


def test_profile_rows_are_read_whatever_the_case_of_their_columns(sim: EfficySimulator, client: EfficyClient) -> None:
    person = get_one(sim, client, consult(dataset([{"k_profile": 12, "name": "Newsletter"}, {"K_Profile": "13"}])))
    assert person["profiles"] == [12, 13]


def test_efficy_u_nests_dataset_rows_under_data(sim: EfficySimulator, client: EfficyClient) -> None:
    body = consult({"#class": "dataset", "#data": {"data": [{"K_PROFILE": 12}]}})
    body[0]["@func"][0]["#result"] = {"#class": "dataset", "#data": {"data": [MASTER]}}
    person = get_one(sim, client, body)
    assert person["K_CONTACT"] == 7 and person["profiles"] == [12]


@pytest.mark.parametrize(
    "detail",
    [
        None,  # no detail function in the answer
        {"#result": 0},  # a detail that is not a dataset
        dataset([{"NAME": "Newsletter"}]),  # rows without K_PROFILE
        dataset([{"K_PROFILE": "12_865114542"}]),  # a relation key (key_relationId), which float() reads as a number
        dataset([{"K_PROFILE": None}]),
        dataset([{"K_PROFILE": ""}]),
        dataset([{"K_PROFILE": 12}, {"K_PROFILE": "twelve"}]),  # one unreadable row among readable ones
    ],
    ids=["no-detail", "not-a-dataset", "no-column", "relation-key", "null", "empty", "one-bad-row"],
)
def test_unreadable_membership_is_unknown_and_opts_nobody_out(
    sim: EfficySimulator, client: EfficyClient, detail: Any
) -> None:
    person = get_one(sim, client, consult(detail))
    assert "profiles" not in person
    desired = mapped(person)
    assert desired.consents == {}  # left as they are: no opt-out on an answer that does not say
    assert "profiles" in [name for name, _ in desired.skipped_fields]  # and the person's report says why


def test_an_empty_detail_dataset_is_positive_evidence_of_no_membership(
    sim: EfficySimulator, client: EfficyClient
) -> None:
    person = get_one(sim, client, consult(dataset([])))
    assert person["profiles"] == []
    assert set(mapped(person).consents.values()) == {"opt-out"}


def test_a_master_key_that_is_not_a_record_key_is_a_malformed_answer(
    sim: EfficySimulator, client: EfficyClient
) -> None:
    answer(sim, "^/crm/json", consult(dataset([]), master={**MASTER, "K_CONTACT": "7_12"}))
    with pytest.raises(EfficyBusinessError) as raised:
        client.get_persons([7])
    assert raised.value.code == "INVALID_RESPONSE"


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [
        (None, "unknown"),
        (["12_3"], "unknown"),
        ([12, "x"], "unknown"),
        ([{"K_PROFILE": 12}, {"k_profile": "13.0"}], [12, 13]),
        (["12", 13.0], [12, 13]),
        ([], []),
    ],
    ids=["null", "relation-key", "one-bad", "row-objects", "strings-and-floats", "empty"],
)
def test_rest_export_profiles(sim: EfficySimulator, client: EfficyClient, profiles: Any, expected: Any) -> None:
    answer(sim, "^/v1/records", {"records": [{**MASTER, "profiles": profiles}], "page": 0, "page_size": 5})
    [person] = client.list_persons_page(0, 5)
    if expected == "unknown":
        assert "profiles" not in person
        assert mapped(person).consents == {}
    else:
        assert person["profiles"] == expected


@pytest.mark.parametrize("empty", ["", {}, False, None, 0])
def test_an_empty_error_key_is_no_error(sim: EfficySimulator, client: EfficyClient, empty: Any) -> None:
    body = consult(dataset([{"K_PROFILE": 12}]))
    body[0]["#error"] = empty
    body[0]["@func"][0]["#error"] = empty
    assert get_one(sim, client, body)["profiles"] == [12]


def test_an_empty_error_key_without_data_is_still_no_person(sim: EfficySimulator, client: EfficyClient) -> None:
    answer(sim, "^/crm/json", [{"@name": "consult", "entity": "Cont", "key": 7, "#error": "", "@func": []}])
    with pytest.raises(EfficyBusinessError) as raised:  # not read as "gone": no master dataset at all
        client.get_persons([7])
    assert raised.value.code == "INVALID_RESPONSE"


# ---- an answer is the asked person's, or it is refused ---------------------------------------------------------
def test_answers_without_id_in_another_order_are_never_filed_under_the_wrong_person(
    sim: EfficySimulator, client: EfficyClient
) -> None:
    """Efficy (or something in front of it) does not echo `#id` and answers the batch in another order: matched
    by position, person 7 was given person 8's e-mail and CRM profiles, and opted out on their evidence."""
    seven, eight = consult(dataset([])), consult(dataset([]), {**MASTER, "K_CONTACT": 8, "EMAIL1": "p8@example.com"})
    answer(sim, "^/crm/json", [*eight, *seven])
    with pytest.raises(EfficyBusinessError) as refused:
        client.get_persons([7, 8])
    assert refused.value.code == "INVALID_RESPONSE" and "answered contact 8" in str(refused.value)
    answer(sim, "^/crm/json", [*seven, *eight])  # in order: read as before
    read = client.get_persons([7, 8])
    assert {k: p["EMAIL1"] for k, p in read.items()} == {7: "p7@example.com", 8: "p8@example.com"}


def test_a_consult_answered_with_another_contact_is_refused(sim: EfficySimulator, client: EfficyClient) -> None:
    """A consult of 7 answered with contact 9's record (a merge redirected it): not person 7's data."""
    with pytest.raises(EfficyBusinessError) as refused:
        get_one(sim, client, consult(dataset([]), {**MASTER, "K_CONTACT": 9}))
    assert refused.value.code == "INVALID_RESPONSE"
