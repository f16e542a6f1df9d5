"""Issue 11.1 / 11.4 in the Tags step: a query answer that cannot be read untags nobody, and APSIS refusing our
credentials fails the step instead of counting persons as failed. Real clients over HTTP (the Efficy and APSIS
simulators) and moto's DynamoDB."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import AuthError, EfficyBusinessError
from efficy_sync.clients.http import RetryPolicy
from efficy_sync.fullsync.tags import mirror_query_tags
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_fullsync_tags import CFG, tagged, world  # noqa: F401

FAST = RetryPolicy(total=1, backoff_factor=0.01, backoff_jitter=0.0)


@pytest.fixture
def efficy() -> Any:
    sim = EfficySimulator().start()
    sim.upsert_persons([{"K_CONTACT": k, "NAME": f"N{k}", "EMAIL1": f"p{k}@example.com"} for k in range(1, 7)])
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": [1, 2, 3]}])
    with EfficyClient(sim.url, sim.api_key, policy=FAST) as client:
        yield sim, client
    sim.stop()


def run(world: dict[str, Any], efficy: EfficyClient, **options: Any) -> dict[str, Any]:
    return mirror_query_tags(
        CFG,
        run_query=efficy.run_query,
        apsis=world["apsis"],
        states=world["states"],
        members=world["members"],
        dry_run=False,
        run_id="run",
        **options,
    )


@pytest.mark.parametrize(
    "body",
    [
        [{"#id": "api-query", "@name": "api", "@func": [{"@name": "query"}]}],
        [{"@name": "api", "@func": [{"@name": "query", "#result": {"#class": "dataset", "#data": [{"NAME": "x"}]}}]}],
    ],
)
def test_a_query_answer_that_cannot_be_read_untags_nobody(world: dict[str, Any], efficy: Any, body: Any) -> None:
    sim, client = efficy
    run(world, client)
    assert tagged(world) == {1, 2, 3}
    requests.post(
        f"{sim.url}/_sim/faults",
        json={
            "path_regex": "^/crm/json",
            "status": 200,
            "count": 1,
            "body": json.dumps(body),
            "content_type": "application/json",
        },
        timeout=5,
    ).raise_for_status()
    with pytest.raises(EfficyBusinessError):
        run(world, client)
    assert tagged(world) == {1, 2, 3}
    assert world["members"].get("demo", 3618) == {1, 2, 3}


def test_apsis_refusing_our_credentials_fails_the_step_and_counts_no_person(world: dict[str, Any], efficy: Any) -> None:
    _sim, client = efficy
    world["sim"].add_fault(path_regex="/tags$", status=403, body="{}")
    with pytest.raises(AuthError):
        run(world, client)
    assert world["members"].get("demo", 3618) == {1, 2, 3}  # widened only: names members, narrowed by no failed call
    assert all(not world["states"].get("demo", k).tags for k in (1, 2, 3))


def test_a_query_that_answers_no_members_untags_nobody_until_an_admin_confirms(
    world: dict[str, Any], efficy: Any
) -> None:
    sim, client = efficy
    run(world, client)
    assert tagged(world) == {1, 2, 3}
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": []}])  # an edited query, or rights the user lost

    held = run(world, client)
    assert tagged(world) == {1, 2, 3}, "untagged on an empty answer: three is below min_removals, nothing held them"
    assert held["held"] == {"vip": 3} and held["untagged"] == 0
    assert "answered no members" in held["errors"]["vip"]
    assert world["members"].get("demo", 3618) == {1, 2, 3}  # still former members: a confirmed run untags them

    too_few = run(world, client, emptied_up_to=lambda tag: 2)  # `--allow-removals-up-to 2`: three hold the tag
    assert too_few["held"] == {"vip": 3} and too_few["untagged"] == 0 and tagged(world) == {1, 2, 3}
    assert "--allow-removals-up-to 3" in too_few["errors"]["vip"]

    confirmed = run(world, client, emptied_up_to=lambda tag: 3)
    assert confirmed["untagged"] == 3 and tagged(world) == set()


def test_the_last_member_leaving_a_query_is_untagged(world: dict[str, Any], efficy: Any) -> None:
    sim, client = efficy
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": [1]}])
    run(world, client)
    assert tagged(world) == {1}
    sim.set_queries([{"K_QUERY": 3618, "name": "VIP", "members": []}])
    assert run(world, client)["untagged"] == 1 and tagged(world) == set()
