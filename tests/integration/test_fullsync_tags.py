"""Query tags mirror the query: members tagged, former members untagged; against the APSIS simulator over HTTP
and moto's DynamoDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import efficy_sync.fullsync.tags as tags_module
import pytest
from efficy_sync.clients.apsis import ApsisClient
from efficy_sync.clients.errors import EfficyBusinessError, EfficyUnavailable
from efficy_sync.config import load_config_file
from efficy_sync.fullsync.tags import QueryMembers, decode_members, encode_members, merge_results, mirror_query_tags
from efficy_sync.state import PersonState
from efficy_sync.store.persons import PersonStateStore
from efficy_sync_tools.sims.apsis import ApsisSimulator
from hypothesis import given
from hypothesis import strategies as st

from tests.support import create_pk_sk_table

CFG = load_config_file(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
KEYSPACE = "com.apsis1.keyspaces.crm-id"
TABLE = "state"


@given(st.sets(st.integers(min_value=1, max_value=10**12)))
def test_member_snapshots_round_trip(keys: set[int]) -> None:
    assert decode_members(encode_members(keys)) == keys


def test_a_million_members_fit_in_a_few_items() -> None:
    assert len(encode_members(range(1, 3_000_000, 3))) < 4 * 300_000


@pytest.fixture
def world(in_process_aws: str) -> Iterator[dict[str, Any]]:
    sim = ApsisSimulator(client_id="tags-test", client_secret="tags-test-secret", rate_limits=False).start()
    apsis = ApsisClient(sim.url, "tags-test", "tags-test-secret", section="com.apsis1.sections.default")
    create_pk_sk_table(TABLE)
    states = PersonStateStore(TABLE)
    for key in range(1, 7):
        apsis.create_profile(str(key))
        outcome = "skipped" if key == 6 else "synced"
        states.put(
            PersonState(
                integration_id="demo",
                person_key=str(key),
                exists_in_apsis=True,
                last_outcome=outcome,
                change_stamp="2026-01-01T00:00:00",
            )
        )
    yield {"sim": sim, "apsis": apsis, "states": states, "members": QueryMembers(TABLE)}
    sim.stop()


def mirror(world: dict[str, Any], members: list[int], *, dry_run: bool = False, **extra: Any) -> dict[str, Any]:
    return mirror_query_tags(
        CFG,
        run_query=lambda query: members,
        apsis=world["apsis"],
        states=world["states"],
        members=world["members"],
        dry_run=dry_run,
        run_id="run-1",
        **extra,
    )


def tagged(world: dict[str, Any]) -> set[int]:
    return {int(p["key"]) for p in world["sim"].profiles() if "vip" in p["tags"]}


def test_members_get_the_tag_and_former_members_lose_it(world) -> None:
    first = mirror(world, [1, 2, 3, 6, 99])  # 6 is skipped by the sync, 99 has no profile
    assert tagged(world) == {1, 2, 3}
    assert first["tags"]["vip"] == {"members": 5, "added": 3}
    assert world["states"].get("demo", 2).tags == {"vip": True}
    assert world["members"].get("demo", 3618) == {1, 2, 3, 6, 99}

    second = mirror(world, [2, 3, 4])
    assert tagged(world) == {2, 3, 4}
    assert second["tagged"] == 1 and second["untagged"] == 1
    assert world["states"].get("demo", 1).tags == {"vip": False}

    calls = sum(world["sim"].calls().values())
    assert mirror(world, [2, 3, 4])["tagged"] == 0
    assert sum(world["sim"].calls().values()) == calls  # nothing changed: no APSIS call


def test_a_tag_pointed_at_another_query_untags_the_old_query_s_members(world) -> None:
    """The snapshot was kept per query: a new query had none, so nobody lost the tag (a VIP campaign went on
    reaching the former VIPs)."""
    mirror(world, [1, 2])  # vip mirrors query 3618
    assert tagged(world) == {1, 2}
    from efficy_sync.config import QueryTag

    moved = CFG.model_copy(update={"tags": CFG.tags.model_copy(update={"queries": [QueryTag(query=4242, tag="vip")]})})
    result = mirror_query_tags(
        moved,
        run_query=lambda query: [3] if query == 4242 else [1, 2],
        apsis=world["apsis"],
        states=world["states"],
        members=world["members"],
        dry_run=False,
        run_id="run-2",
    )
    assert tagged(world) == {3}
    assert result["tagged"] == 1 and result["untagged"] == 2
    assert world["members"].previous("demo", 4242, "vip") == {3}

    # and back to the query it mirrored before (whose snapshot is old): what vip mirrored last is what counts
    back = mirror(world, [1])
    assert tagged(world) == {1} and back["untagged"] == 1


def test_a_dry_run_counts_and_writes_nothing(world) -> None:
    result = mirror(world, [1, 5, 42], dry_run=True, would_sync=lambda keys: {k for k in keys if k == 42})
    assert result["tags"]["vip"]["added"] == 3
    assert tagged(world) == set()
    assert world["members"].get("demo", 3618) is None


def test_a_missing_query_is_reported_and_a_retryable_error_propagates(world) -> None:
    def gone(query: int) -> list[int]:
        raise EfficyBusinessError("Efficy refused run_query: UNKNOWN_QUERY", code="UNKNOWN_QUERY")

    result = mirror_query_tags(
        CFG,
        run_query=gone,
        apsis=world["apsis"],
        states=world["states"],
        members=world["members"],
        dry_run=False,
        run_id="run-1",
    )
    assert "UNKNOWN_QUERY" in result["errors"]["vip"]

    def down(query: int) -> list[int]:
        raise EfficyUnavailable("504")

    with pytest.raises(EfficyUnavailable):
        mirror_query_tags(
            CFG,
            run_query=down,
            apsis=world["apsis"],
            states=world["states"],
            members=world["members"],
            dry_run=False,
            run_id="run-1",
        )


def test_a_mirror_that_runs_out_of_time_resumes_where_it_stopped(world, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tags_module, "TAG_BATCH_PER_WORKER", 2)
    out_of_time = {"time_left": lambda: 0.0, "workers": 1}  # every call applies its first batch, then stops
    results = []
    while not results or results[-1]["more"]:
        results.append(mirror(world, [1, 2, 3, 4, 5], **out_of_time))
        if results[-1]["more"]:
            # widened before the tags go out (never narrowed but by the call that finishes): the members
            # tagged so far are named, so a run that never finishes leaves no tag nobody untags
            assert world["members"].get("demo", 3618) == {1, 2, 3, 4, 5}
        assert len(results) <= 3
    assert [r["tagged"] for r in results] == [2, 2, 1]
    assert tagged(world) == {1, 2, 3, 4, 5}
    assert world["members"].get("demo", 3618) == {1, 2, 3, 4, 5}

    total = None
    for result in results:
        total = merge_results(total, result)
    assert total["tagged"] == 5 and total["tags"]["vip"] == {"added": 5, "members": 5} and total["calls"] == 3


def test_tags_are_applied_on_several_threads_with_the_same_outcome(world) -> None:
    result = mirror(world, [1, 2, 3, 4, 5], workers=4)
    assert result["tagged"] == 5 and result["more"] is False
    assert tagged(world) == {1, 2, 3, 4, 5}
    assert all(world["states"].get("demo", k).tags == {"vip": True} for k in range(1, 6))


class _RacedOnce:
    """The state store, with another sync storing person 2 right after the Tags step read them (once)."""

    def __init__(self, states: Any) -> None:
        self._states, self._raced = states, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._states, name)

    def get(self, integration_id: str, key: int) -> Any:
        state = self._states.get(integration_id, key)
        if int(key) == 2 and not self._raced:
            self._raced = True
            self._states.put(state.model_copy(update={"attribute_hashes": {"x": "newer"}}))
        return state


def test_a_tag_set_while_another_sync_stores_the_person_is_still_known_to_the_state(world) -> None:
    """The tag went to APSIS; the state write lost the race and was dropped, so the state never knew the tag was
    set, and when the person left the query nobody took it away."""
    mirror_query_tags(
        CFG, run_query=lambda query: [1, 2, 3], apsis=world["apsis"], states=_RacedOnce(world["states"]),
        members=world["members"], dry_run=False, run_id="run-1",
    )  # fmt: skip
    assert tagged(world) == {1, 2, 3}
    stored = world["states"].get("demo", 2)
    assert stored.tags == {"vip": True} and stored.attribute_hashes == {"x": "newer"}  # both writers' news

    mirror(world, [1, 3])
    assert tagged(world) == {1, 3}


def test_a_cancel_stops_the_tagging_between_batches_and_writes_no_snapshot(world) -> None:
    """After a cancel real-time changes apply again: tags planned from this call's reads must not keep going
    out, and the members snapshot waits for a run that completes (the next run plans the rest again)."""
    for key in range(7, 61):
        world["apsis"].create_profile(str(key))
        world["states"].put(PersonState(integration_id="demo", person_key=str(key), exists_in_apsis=True,
                                        last_outcome="synced", change_stamp="2026-01-01T00:00:00"))  # fmt: skip
    asked = iter([True])  # active for the first batch, cancelled from then on

    result = mirror(world, list(range(1, 61)), workers=1, should_continue=lambda: next(asked, False))

    assert result["stopped"] and not result["more"]
    assert result["tagged"] == 25 == len(tagged(world))  # one batch of 25 (one worker), then the cancel
    # the snapshot names the members before any tag went out (widened), and is narrowed by no stopped call
    assert world["members"].get("demo", 3618) == set(range(1, 61))


def test_a_tags_route_apsis_does_not_serve_is_no_proof_the_profile_is_gone(world) -> None:
    """The profile-tags path is an assumption (contracts/apsis-one.md). A route the account does not serve
    answers 404 too, which the mirror read as "the profile is gone": every member counted tagged, the member
    snapshot written, while APSIS held no tag."""
    from efficy_sync.clients.apsis import ApsisClient
    from efficy_sync.clients.errors import ApsisUnavailable

    sim = world["sim"]
    world["apsis"] = ApsisClient(
        sim.url, "tags-test", "tags-test-secret", section="com.apsis1.sections.default",
        profile_tags_path="/audience/keyspaces/{keyspace}/profiles/{key}/sections/{section}/profile-tags",
    )  # fmt: skip
    with pytest.raises(ApsisUnavailable, match="profile_tags_path"):
        mirror(world, [1, 2, 3])
    assert tagged(world) == set()
    # widened before the calls (it names members, not tagged persons: an untag also needs the state's word)
    assert world["members"].get("demo", 3618) == {1, 2, 3}
    assert not any(world["states"].get("demo", k).tags.get("vip") for k in (1, 2, 3))
