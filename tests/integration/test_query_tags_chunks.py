"""The query-tag mirror walked its members in chunks: each call read the states of every current and former
member at once (fullsync/tags.py), and a call resumed after `more: True` read them all again before its first
time check, so the reading never counted against `time_left`. A call now reads TAG_READ_CHUNK states at a time,
stops for time between chunks too, and answers `next`, from which the next call (the Tags step's loop, the
breaker's release) resumes. Against the APSIS simulator over HTTP and moto's DynamoDB."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import efficy_sync.fullsync.lifecycle as lifecycle_module
import efficy_sync.fullsync.tags as tags_module
import pytest
from efficy_sync.fullsync.breaker import Breaker
from efficy_sync.fullsync.lifecycle import FullSync
from efficy_sync.fullsync.tags import mirror_query_tags

from tests.integration.test_fullsync_tags import CFG, mirror, tagged, world  # noqa: F401 (world: the fixture)


class CountingStates:
    """The state store, recording the keys of each get_many."""

    def __init__(self, states: Any) -> None:
        self._states, self.reads = states, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._states, name)

    def get_many(self, integration_id: str, keys: Any) -> Any:
        keys = list(keys)
        self.reads.append(keys)
        return self._states.get_many(integration_id, keys)


def resumed(world: dict[str, Any], members: Any, states: Any, **extra: Any) -> list[dict[str, Any]]:
    """Calls the mirror as the Tags step's loop does, out of time at once, each call after the last one's next."""
    results: list[dict[str, Any]] = []
    while not results or results[-1]["more"]:
        results.append(
            mirror_query_tags(
                CFG, run_query=lambda query: members() if callable(members) else members, apsis=world["apsis"],
                states=states, members=world["members"], dry_run=False, run_id="run-2", time_left=lambda: 0.0,
                after=results[-1]["next"] if results else None, **extra,
            )
        )  # fmt: skip
        assert len(results) <= 10
    return results


def test_a_resumed_mirror_reads_each_state_once_and_stops_for_time_while_reading(world, monkeypatch) -> None:
    mirror(world, [1, 2, 3, 4, 5])  # all tagged: the next mirror has nothing to send, only states to read
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 2)
    states = CountingStates(world["states"])

    results = resumed(world, [1, 2, 3, 4, 5], states)

    assert [r["more"] for r in results] == [True, True, False]
    assert [r.get("next") for r in results] == [2, 4, None]
    assert states.reads == [[1, 2], [3, 4], [5]], "a call read beyond its time, or read the done members again"
    assert sum(r["tagged"] for r in results) == 0 and tagged(world) == {1, 2, 3, 4, 5}
    assert world["members"].get("demo", 3618) == {1, 2, 3, 4, 5}


def test_newcomers_are_tagged_chunk_by_chunk_and_the_counts_add_up(world, monkeypatch) -> None:
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 2)
    monkeypatch.setattr(tags_module, "TAG_BATCH_PER_WORKER", 1)
    results = resumed(world, [1, 2, 3, 4, 5], world["states"], workers=1)
    assert sum(r["tagged"] for r in results) == 5 and tagged(world) == {1, 2, 3, 4, 5}
    assert all(r["tagged"] >= 1 for r in results), "a call sent nothing"
    assert world["members"].get("demo", 3618) == {1, 2, 3, 4, 5}


def test_a_member_who_left_below_the_resume_point_is_untagged_by_the_next_run(world, monkeypatch) -> None:
    """A former member the resumed call no longer walks over stays in the snapshot, so the next run untags them
    (narrowed away, they kept the tag for good)."""
    mirror(world, [1, 2, 3, 4, 5])
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 2)
    answers = iter([[1, 2, 3, 4, 5]])  # the first call's answer; person 1 leaves the query before the second

    results = resumed(world, lambda: next(answers, [2, 3, 4, 5]), world["states"])

    assert len(results) == 3 and tagged(world) == {1, 2, 3, 4, 5}
    assert world["members"].get("demo", 3618) == {1, 2, 3, 4, 5}
    assert mirror(world, [2, 3, 4, 5])["untagged"] == 1 and tagged(world) == {2, 3, 4, 5}
    assert world["members"].get("demo", 3618) == {2, 3, 4, 5}


def test_a_dry_run_that_runs_out_of_time_counts_each_member_once(world, monkeypatch) -> None:
    mirror(world, [1, 2, 3, 4, 5])
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 2)
    results: list[dict[str, Any]] = []
    while not results or results[-1]["more"]:
        results.append(mirror(world, [1, 2, 7, 8], dry_run=True, would_sync=set, time_left=lambda: 0.0,
                              after=results[-1]["next"] if results else None))  # fmt: skip
    assert sum(r["untagged"] for r in results) == 3  # 3, 4 and 5 left: each counted once
    assert sum(r["tagged"] for r in results) == 2  # 7 and 8, whom the run would have created
    assert len(results) == 4 and tagged(world) == {1, 2, 3, 4, 5}  # keys 1..8, two a call: nothing sent


def test_the_tags_step_and_the_release_resume_after_the_last_call_s_next(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int | None] = []

    def fake_mirror(cfg: Any, **kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs["after"])
        return {"tagged": 0, "untagged": 0, "failed": 0, "tags": {}, "more": True, "next": 40 + len(asked)}

    monkeypatch.setattr(lifecycle_module, "mirror_query_tags", fake_mirror)
    run = SimpleNamespace(integration_id="demo", run_id="r1", dry_run=False, active=True, counters={})
    fs = SimpleNamespace(
        _run=lambda payload: run, run_config=lambda run: CFG, efficy_for=lambda cfg: SimpleNamespace(run_query=None),
        _apsis=lambda cfg, workers: None, states=None, members=None, _still_running=lambda i, r: lambda: True,
    )  # fmt: skip
    first = FullSync.tags(fs, {}, previous={}, hold=False)  # type: ignore[arg-type]
    FullSync.tags(fs, {}, previous=first, hold=False)  # type: ignore[arg-type]
    assert asked == [None, 41]

    fs.tags = lambda payload, **kwargs: FullSync.tags(fs, payload, **kwargs)  # type: ignore[attr-defined]
    fs.runs = SimpleNamespace(add_once=lambda *args: None)
    breaker = Breaker(fs, SimpleNamespace(held_by=lambda *args: []), None)  # type: ignore[arg-type]
    released = breaker.release({}, None, tags_result={"held": {"vip": 3}})
    assert released["more"] and released["tags_next"] == 43
    breaker.release({}, released, tags_result={"held": {"vip": 3}})
    assert asked[2:] == [None, 43]
