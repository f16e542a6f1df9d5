"""Answers of APSIS One (or of what stands in front of it) that are not about the person never acknowledge the
person's change: the real PersonSyncer and ApsisClient against the APSIS simulator over HTTP.

A change is acknowledged (the SQS message deleted, the page done) only on a failure about the person's own
data (clients/errors.py `acknowledgeable`). These answers used to pass for one, or for success:
- the token endpoint answering a 4xx other than 400/401/403 (a WAF's 405, a proxy's 415, an undocumented 422):
  typed RejectedValue, the person's failure, so a CRM opt-out was recorded as failed and dropped;
- a write answered 405/415 (a proxy, a wrong path setting): the same;
- a write answered 200 with a web page (a maintenance page): recorded as sent, so an opt-out APSIS never got
  was stored as pushed and never sent again.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import ApsisUnavailable, AuthError, RequestRefused, acknowledgeable
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.config import config_from_dict
from efficy_sync.sync import PersonSyncer
from efficy_sync_tools.sims.apsis import ApsisSimulator

from tests.integration.test_diff_calls import CFG, RAW, person
from tests.memory_store import MemoryPersonStateStore

FAST = RetryPolicy(total=2, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=2, read_timeout=5)
NEWS = "usercreated.topics.newsletter-ab12"
SLOT = f"{NEWS}|email"
JSON = "application/json"


@pytest.fixture
def sim() -> Iterator[ApsisSimulator]:
    simulator = ApsisSimulator(client_id="diff", client_secret="diff-secret", rate_limits=False).start()
    yield simulator
    simulator.stop()


def opted_in(sim: ApsisSimulator) -> tuple[PersonSyncer, MemoryPersonStateStore]:
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(CFG, apsis, store, email_lookup=lambda address: [])
    assert syncer.sync(7, person(7), None).result == "synced"
    assert store.get(CFG.integration_id, 7).consents == {SLOT: "opt-in"}
    return syncer, store


def crm_opt_out() -> dict:
    left = person(7, stamp="2024-05-02T10:00:00")
    left["profiles"] = []  # removed from the CRM profile mapped to the newsletter
    return left


def apsis_consents(sim: ApsisSimulator) -> set[tuple[str, str]]:
    return {(c["topic"], c["type"]) for c in (sim.get_profile(CFG.apsis.keyspace, "7") or {"consents": []})["consents"]}


def retried_then_sent(sim: ApsisSimulator, syncer: PersonSyncer, store: MemoryPersonStateStore, error: type) -> None:
    """The opt-out's sync raises (the message is retried), and once the fault is gone the retry sends it."""
    with pytest.raises(error) as caught:
        syncer.sync(7, crm_opt_out(), store.get(CFG.integration_id, 7))
    assert not acknowledgeable(caught.value)
    # never recorded as sent; an outage's call may have reached APSIS all the same (a proxy's page, a timeout):
    # marked unknown, so the retry sends it again whatever happens to the person meanwhile
    held = "unknown" if caught.value.retryable else "opt-in"
    assert store.get(CFG.integration_id, 7).consents == {SLOT: held}
    sim.clear_faults()
    assert syncer.sync(7, crm_opt_out(), store.get(CFG.integration_id, 7)).result == "synced"
    assert (NEWS, "opt-out") in apsis_consents(sim)
    assert store.get(CFG.integration_id, 7).consents == {SLOT: "opt-out"}


@pytest.mark.parametrize("status", [404, 405, 415, 422])
def test_a_token_endpoint_refusing_oddly_never_acknowledges_an_opt_out(sim: ApsisSimulator, status: int) -> None:
    syncer, store = opted_in(sim)
    sim.revoke_tokens()
    sim.add_fault(
        path_regex="^/oauth/token$", status=status, count=100, body='{"title": "odd"}',
        content_type="application/problem+json",
    )  # fmt: skip
    retried_then_sent(sim, syncer, store, AuthError)


@pytest.mark.parametrize("status", [405, 406, 415])
def test_a_write_refused_for_our_request_not_a_value_is_not_the_persons_failure(
    sim: ApsisSimulator, status: int
) -> None:
    syncer, store = opted_in(sim)
    sim.add_fault(path_regex="/consents$", method="POST", status=status, count=100)
    retried_then_sent(sim, syncer, store, RequestRefused)


NGINX_400 = (
    "<html><head><title>400 Request Header Or Cookie Too Large</title></head><body><center><h1>400 Bad Request"
    "</h1></center><hr><center>nginx</center></body></html>"
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(NGINX_400, "text/html"), ("", "text/plain"), ('{"message": "Bad Request"}', "application/json")],
)
def test_a_400_that_is_not_apsis_own_answer_is_not_the_persons_failure(
    sim: ApsisSimulator, body: str, content_type: str
) -> None:
    """A proxy's or a WAF's 400 page in front of the API (nginx's header too large: a long token) is not APSIS
    refusing this person's value: acknowledged as the person's failure, it lost the CRM opt-out."""
    syncer, store = opted_in(sim)
    sim.add_fault(path_regex="/consents$", method="POST", status=400, count=100, body=body, content_type=content_type)
    retried_then_sent(sim, syncer, store, RequestRefused)


def test_apsis_own_400_still_refuses_the_persons_value(sim: ApsisSimulator) -> None:
    syncer, store = opted_in(sim)
    sim.add_fault(
        path_regex="/consents$", method="POST", status=400, count=100,
        body='{"title": "Bad Request", "status": 400, "detail": "invalid value"}',
        content_type="application/problem+json",
    )  # fmt: skip
    outcome = syncer.sync(7, crm_opt_out(), store.get(CFG.integration_id, 7))
    assert outcome.result == "failed" and outcome.error_category == "rejected_value"


def test_a_write_answered_with_a_web_page_is_not_sent(sim: ApsisSimulator) -> None:
    syncer, store = opted_in(sim)
    sim.add_fault(
        path_regex="/consents$", method="POST", status=200, count=100,
        body="<html><body>Maintenance</body></html>", content_type="text/html; charset=utf-8",
    )  # fmt: skip
    retried_then_sent(sim, syncer, store, ApsisUnavailable)


# ---- a yes/no value that is no spelling of yes or no ----------------------------------------------------------
ROBINSON_CFG = config_from_dict(
    {
        **RAW,
        "sync_conditions": [{"field": "ROBINSON", "not_equals": "1"}],
        "on_condition_lost": "delete",
    }
)


def robinson(stamp: str, value: str) -> dict:
    return {**person(7, stamp=stamp), "ROBINSON": value}


@pytest.mark.parametrize("value", ["x", "Ja", "-1", "checked"])
def test_an_unreadable_exclusion_flag_neither_creates_nor_deletes(sim: ApsisSimulator, value: str) -> None:
    """`ROBINSON not_equals "1"` let a person whose flag read "x" through, and they were created in APSIS One. Now
    they are not created; and a person already synced is not deleted on it either (on_condition_lost: delete):
    an unreadable value is evidence of nothing."""
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    store = MemoryPersonStateStore()
    syncer = PersonSyncer(ROBINSON_CFG, apsis, store, email_lookup=lambda address: [])

    new = syncer.sync(7, robinson("2024-05-01T10:00:00", value), None)
    assert new.result == "skipped" and "not a yes/no value" in new.reason
    assert sim.get_profile(CFG.apsis.keyspace, "7") is None  # not created

    assert syncer.sync(7, robinson("2024-05-02T10:00:00", "0"), None).result == "synced"
    kept = syncer.sync(7, robinson("2024-05-03T10:00:00", value), store.get(ROBINSON_CFG.integration_id, 7))
    assert kept.result == "skipped" and kept.operations == []
    assert sim.get_profile(CFG.apsis.keyspace, "7") is not None  # not deleted

    gone = syncer.sync(7, robinson("2024-05-04T10:00:00", "1"), store.get(ROBINSON_CFG.integration_id, 7))
    assert [type(op).__name__ for op in gone.operations] == ["DeleteProfile"]  # a readable "1" still removes


# ---- success codes and nulls the documentation does not pin down ------------------------------------------------
def test_a_token_answered_201_is_a_token(sim: ApsisSimulator) -> None:
    """APSIS One lists 200 and 201 among its success codes (contracts/apsis-one.md §5). A token answered 201 was
    read as a refusal of our request (RequestRefused: "APSIS token: 201"), and every call of the client failed."""
    minted = requests.post(
        f"{sim.url}/oauth/token",
        json={"grant_type": "client_credentials", "client_id": "diff", "client_secret": "diff-secret"},
        timeout=5,
    ).json()
    sim.add_fault(path_regex="^/oauth/token$", status=201, count=1, body=json.dumps(minted), content_type=JSON)
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    assert apsis.list_keyspaces()
    assert apsis.calls["token"] == 1


def test_an_attribute_whose_versions_are_null_has_no_live_version(sim: ApsisSimulator) -> None:
    """`"versions": null` instead of an empty list raised TypeError (an untyped crash of the attribute write's
    version lookup); it is an attribute without a live version, as one without `versions` already was."""
    items = [
        {"discriminator": "com.apsis1.attributes.firstname", "versions": None},
        {"discriminator": "com.apsis1.attributes.lastname", "versions": [{"id": "v-ln", "deprecated_at": None}]},
    ]
    sim.add_fault(path_regex="/attributes$", status=200, count=1, body=json.dumps({"items": items}), content_type=JSON)
    apsis = ApsisClient(sim.url, "diff", "diff-secret", section=CFG.apsis.section, policy=FAST)
    assert apsis.live_attribute_versions() == {"com.apsis1.attributes.lastname": "v-ln"}
