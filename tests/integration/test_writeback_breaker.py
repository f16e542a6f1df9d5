"""A mass unsubscribe after a sync condition was tightened (`on_condition_lost: delete`): the opt-out write-back
syncs each person it takes out of the CRM profile, and a person who now fails the conditions is deleted. Those
deletes went out unjudged (the write-back's syncer had no removal gate) where the real-time worker holds the same
burst over the breaker's limit. Now the write-back asks the same real-time gate (the same window counter, trip
and holds), the opt-out itself is never held, and the held deletes wait for `full-sync start --allow-removals`.

The real write-back Lambda handler (functions/write_back/app.py) with its real ConfigStore, PersonStateStore,
HeldRemovals and RemovalBreaker on moto, the real Efficy and APSIS clients against the simulators over HTTP
(fullsync_harness.py); only the client factories are pointed at the simulators.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync.config import config_from_dict
from efficy_sync.mapping import needed_fields
from efficy_sync.optout import OptOutMessage, SlotRef
from efficy_sync.person_plan import SetConsent
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.removals import BurstGate
from efficy_sync.sync import PersonSyncer

from tests.integration.fullsync_harness import (  # noqa: F401  (fixtures)
    CRM,
    NEWS,
    World,
    apsis_sim,
    make_world,
    person,
    raw_config,
)
from tests.support import WRITE_BACK_ENV, load_function

PERSONS = 60  # the real-time limit: max(min_removals - 1, 5 % of 60 profiles) = 3
UNSUBSCRIBERS = list(range(1, 21))
AT = "2024-05-01T10:00:00.000Z"


class Context:
    function_name = "write-back"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:eu-west-1:123456789012:function:write-back"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class NoSqs:
    def change_message_visibility(self, **_: Any) -> None:
        return None


def member(key: int) -> dict[str, Any]:
    return {**person(key), "ROBINSON": "0"}


def tightened() -> dict[str, Any]:
    """The admin adds a condition every person fails (on_condition_lost: delete, as the harness's config)."""
    return raw_config(sync_conditions=[{"field": "OPENED", "equals": "1"}, {"field": "ROBINSON", "equals": "1"}])


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    w = make_world(safety={"max_removal_percent": 5, "min_removals": 2})
    w.efficy_sim.upsert_persons([member(k) for k in range(1, PERSONS + 1)])
    for _ in range(2):  # the second counts the 60 profiles: the base the real-time breaker is judged against
        assert w.run()["report"]["status"] == "succeeded"
    assert w.in_apsis() == set(range(1, PERSONS + 1)) and w.fs.removal_breaker.base("p17")["base:profiles"] == 60
    ConfigStore("config").put(config_from_dict(tightened()), applied_by="test")  # no full sync since
    return w


@pytest.fixture
def handler(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    module = load_function("write_back", "write_back_gate_app", WRITE_BACK_ENV, monkeypatch)
    monkeypatch.setattr(module, "efficy_client", lambda cfg, policy=None: world.efficy)
    monkeypatch.setattr(module, "apsis_client", lambda cfg: world.apsis)
    monkeypatch.setattr(module, "email_lookup", lambda cfg: world.efficy.find_contacts_by_email)
    monkeypatch.setattr(module, "paced", lambda cfg, client: client)
    monkeypatch.setattr(module, "brief_client", lambda service: NoSqs())
    yield module
    from efficy_sync.settings import settings

    settings.cache_clear()


def unsubscribe(w: World, keys: list[int]) -> dict[str, Any]:
    """Each person unsubscribes in APSIS One; the automation's messages reach the write-back Lambda."""
    records = []
    for key in keys:
        w.apsis_sim.unsubscribe(str(key), NEWS, keyspace=CRM)
        message = OptOutMessage(
            integration_id="p17",
            event="email.unsubscribe",
            profile_key=key,
            email=f"p{key}@example.com",
            slots=[SlotRef(topic=NEWS, channel="email")],
            occurred_at=AT,
        )
        records.append(
            {
                "messageId": f"m{key}",
                "receiptHandle": f"h{key}",
                "body": message.model_dump_json(),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:eu-west-1:123456789012:optouts",
                "awsRegion": "eu-west-1",
            }
        )
    return {"Records": records}


def consent(w: World, key: int) -> str | None:
    profile = w.apsis_sim.get_profile(CRM, str(key)) or {}
    return next((c["type"] for c in profile.get("consents", []) if c["topic"] == NEWS), None)


def test_a_mass_unsubscribe_deletes_no_more_than_the_real_time_breaker_lets_through(world: World, handler: Any) -> None:
    answer = handler.handler(unsubscribe(world, UNSUBSCRIBERS), Context())
    assert answer["batchItemFailures"] == []  # every opt-out written back and acknowledged

    # the opt-outs themselves: every unsubscriber is out of the CRM profile and opted out in APSIS One
    assert all(12 not in world.efficy_sim.get_person(k)["profiles"] for k in UNSUBSCRIBERS)
    assert all(consent(world, k) == "opt-out" for k in UNSUBSCRIBERS if k in world.in_apsis())

    deleted = set(UNSUBSCRIBERS) - world.in_apsis()
    held = set(world.fs.held.keys("p17"))
    assert len(deleted) == 3, f"{len(deleted)} profiles deleted by the write-back, unjudged by the breaker"
    assert world.fs.removal_breaker.tripped("p17") is not None
    assert held == set(UNSUBSCRIBERS) - deleted  # the rest wait for the admin

    allowed = world.run(allow_removals=True)  # `full-sync start p17 --allow-removals`: the admin confirms
    assert allowed["report"]["status"] == "succeeded"
    assert not set(UNSUBSCRIBERS) & world.in_apsis() and not set(world.fs.held.keys("p17"))
    assert world.fs.removal_breaker.tripped("p17") is None
    for key in UNSUBSCRIBERS:  # the opt-outs stand: recorded, confirmed, written back
        record = world.fs.states.get("p17", key).optouts[f"{NEWS}|email"]  # type: ignore[union-attr]
        assert record.confirmed and not record.awaiting_writeback


def test_the_real_time_worker_and_the_write_back_are_judged_as_one_burst(world: World, handler: Any) -> None:
    cfg = config_from_dict(tightened())
    gate = BurstGate(cfg, world.fs.removal_breaker, world.fs.held)
    syncer = PersonSyncer(cfg, world.apsis, world.fs.states, email_lookup=lambda _: [], removal_gate=gate)
    for key in (41, 42, 43):  # three CRM changes the real-time worker applies: the window's limit reached
        current = world.efficy.get_persons([key], needed_fields(cfg))
        syncer.sync(key, current.get(key), world.fs.states.get("p17", key))
    assert {41, 42, 43}.isdisjoint(world.in_apsis()) and world.fs.removal_breaker.tripped("p17") is None

    assert handler.handler(unsubscribe(world, [1, 2]), Context())["batchItemFailures"] == []
    assert {1, 2} <= world.in_apsis(), "the write-back's deletes were not counted with the worker's"
    assert set(world.fs.held.keys("p17")) == {1, 2} and world.fs.removal_breaker.tripped("p17") is not None
    assert all(12 not in world.efficy_sim.get_person(k)["profiles"] for k in (1, 2))  # the opt-outs went


def test_an_unsubscriber_who_still_matches_is_opted_out_and_untagged_without_counting(
    world: World, handler: Any
) -> None:
    """The person's own decision: the opt-out that confirms it, and the tag of the CRM profile it took them out
    of, are no removals for the breaker: even while it is tripped, a campaign's unsubscribes are neither held
    nor counted (the conditions loosened again: every unsubscriber still matches)."""
    ConfigStore("config").put(
        config_from_dict(raw_config(safety={"max_removal_percent": 5, "min_removals": 2})), applied_by="t"
    )
    handler.breaker.trip("p17", 9, 3)  # a real-time burst tripped it earlier
    assert handler.handler(unsubscribe(world, UNSUBSCRIBERS), Context())["batchItemFailures"] == []
    assert set(UNSUBSCRIBERS) <= world.in_apsis()
    assert all(consent(world, k) == "opt-out" for k in UNSUBSCRIBERS)
    assert not any(
        "newsletter-readers" in (world.apsis_sim.get_profile(CRM, str(k)) or {})["tags"] for k in UNSUBSCRIBERS
    )
    assert not set(world.fs.held.keys("p17"))
    assert all(not world.fs.states.get("p17", k).tags.get("newsletter-readers") for k in UNSUBSCRIBERS)  # type: ignore[union-attr]


def test_the_gate_failing_fails_the_opt_out_for_a_retry(
    world: World, handler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB refusing the breaker's counter is a failure of the integration: the message is not acknowledged
    (it comes back; the opt-out, already recorded and written to Efficy, is confirmed again)."""

    def throttled(*_: Any, **__: Any) -> int:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "UpdateItem")

    monkeypatch.setattr(handler.breaker, "add", throttled)
    answer = handler.handler(unsubscribe(world, [5]), Context())
    assert [f["itemIdentifier"] for f in answer["batchItemFailures"]] == ["m5"]
    assert 5 in world.in_apsis() and 12 not in world.efficy_sim.get_person(5)["profiles"]


def test_the_first_full_sync_sets_the_real_time_base_to_the_profiles_it_synced(
    make_world: Callable[..., World],
) -> None:
    """Counted from the states before the run, an integration's first full sync left a base of 0 profiles: every
    real-time window allowed min_removals - 1 removals until a second full sync, so a normal day's deletes were
    held and alarmed. The base is at least what the run synced."""
    w = make_world(safety={"max_removal_percent": 5, "min_removals": 2})
    w.efficy_sim.upsert_persons([member(k) for k in range(1, PERSONS + 1)])
    assert w.run()["report"]["status"] == "succeeded"
    assert w.fs.removal_breaker.base("p17")["base:profiles"] == PERSONS


def test_a_held_unsubscriber_synced_later_gets_no_opt_in_and_no_count(world: World, handler: Any) -> None:
    """A person whose delete the breaker held keeps the stored consent the sync before the opt-out left (the
    delete plans no opt-out: the profile would go with it), while APSIS One holds their opt-out. A later sync of
    them (the conditions loosened again, the breaker still tripped) must neither send an opt-in nor count the
    opt-out as a removal (held with the rest): their APSIS opt-out record decides the slot. (The real-time gate has
    no notion of the person's own decision: the untag of the tag mirroring the CRM profile they left is judged,
    and waits for the release while the breaker is tripped, as optout_gate.py says of a held person.)"""
    assert handler.handler(unsubscribe(world, UNSUBSCRIBERS), Context())["batchItemFailures"] == []
    held = sorted(set(world.fs.held.keys("p17")))
    assert held and world.fs.removal_breaker.tripped("p17") is not None
    cfg = config_from_dict(raw_config(safety={"max_removal_percent": 5, "min_removals": 2}))
    gate = BurstGate(cfg, world.fs.removal_breaker, world.fs.held)
    syncer = PersonSyncer(cfg, world.apsis, world.fs.states, email_lookup=lambda _: [], removal_gate=gate)
    for key in held:
        current = world.efficy.get_persons([key], needed_fields(cfg))
        outcome = syncer.sync(key, current.get(key), world.fs.states.get("p17", key))
        assert not any(isinstance(op, SetConsent) and op.type == "opt-in" for op in outcome.operations), key
        assert not any(isinstance(op, SetConsent) for op in outcome.removals), key  # not counted, never held
        assert consent(world, key) == "opt-out", key
    assert set(held) <= world.in_apsis()  # the tag mirroring the profile they left waits with the rest (docs)
