"""Planned query members (fullsync/query_plan.py): what the Plan step stores and what a page reads back."""

from __future__ import annotations

import pytest
from efficy_sync.clients.errors import EfficyBusinessError, EfficyUnavailable
from efficy_sync.fullsync import query_plan
from efficy_sync.fullsync.query_plan import decode_plan, plan_query_members, tags_of
from efficy_sync.mapping import map_person

from tests.unit.consent_configs import consent_config

CFG = consent_config(
    tags={"queries": [{"query": 1, "tag": "vip"}, {"query": 2, "tag": "gone"}, {"query": 3, "tag": "events"}]}
)


def _run_query(query: int) -> list[int]:
    if query == 2:
        raise EfficyBusinessError("query 2 was deleted", code="NOT_FOUND")
    return {1: [5, 7, 9], 3: [7]}[query]


def test_members_round_trip_and_a_failing_query_is_left_to_the_tags_step() -> None:
    planned = plan_query_members(CFG, _run_query)
    assert [p["tag"] for p in planned] == ["vip", "events"]  # "gone" failed: the Tags step decides about it
    members = decode_plan(planned)
    assert members == {"vip": {5, 7, 9}, "events": {7}}
    of = tags_of(members)
    assert of is not None
    assert (of(7), of(5), of(6)) == ({"vip", "events"}, {"vip"}, set())


def test_an_outage_leaves_the_query_out_too() -> None:
    def down(query: int) -> list[int]:
        raise EfficyUnavailable("504")

    assert plan_query_members(CFG, down) == []
    assert tags_of(decode_plan([])) is None and decode_plan(None) == {}  # nothing planned: tags left out


def test_a_huge_query_is_not_shipped_to_the_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query_plan, "MAX_MEMBERS", 2)
    assert [p["tag"] for p in plan_query_members(CFG, _run_query)] == ["events"]


def test_planned_tags_only_add_never_untag() -> None:
    person = {"K_CONTACT": 6, "EMAIL1": "p6@example.com", "profiles": []}
    desired = map_person(CFG, person, query_tags=set())  # not a member of any planned query
    assert "vip" not in desired.tags  # left to the Tags step's mirror, behind the breaker
    assert map_person(CFG, person, query_tags={"vip"}).tags["vip"] is True
