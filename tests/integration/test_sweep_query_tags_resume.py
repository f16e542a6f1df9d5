"""The sweeper (fullsync/sweep.py) mirrored a query tag with a schedule of its own from the lowest member key on
every sweep: a query whose members already done took longer to read than one sweep (some 200,000 members) read
that done prefix on each sweep, stopped short of its Lambda's timeout and started over on the next one, so the
members beyond it were never tagged (nor the snapshot and its last run written) until the next full sync. Each
sweep now stores its `next` with the query's snapshot head (store/query_members.py: resume_key) and the next
sweep resumes after it; a finished walk, or a snapshot written whole since (a new run), starts from the lowest key
again. Against the APSIS simulator over HTTP and moto's DynamoDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import efficy_sync.fullsync.tags as tags_module
from efficy_sync.fullsync.sweep import scheduled_query_tags

from tests.integration.test_fullsync_tags import CFG, mirror, tagged, world  # noqa: F401 (world: the fixture)
from tests.integration.test_sweep_query_tags import synced_state

QUERY = CFG.tags.queries[0].query
SCHEDULED = CFG.model_copy(
    update={
        "tags": CFG.tags.model_copy(
            update={"queries": [CFG.tags.queries[0].model_copy(update={"schedule": "rate(1 hours)"})]}
        )
    }
)
LAMBDA_TIMEOUT = 240.0  # template.yaml, CleanupFunction
SECONDS_PER_CHUNK_READ = 10.0  # stands for reading TAG_READ_CHUNK states (about a second for 1,000)
DUE = timedelta(hours=2)  # each sweep runs two hours after the last finished mirror: the query is due


def synced(world: dict[str, Any], *keys: int) -> None:
    """Persons the sync keeps in APSIS One (the fixture has 1 to 6)."""
    for key in keys:
        world["apsis"].create_profile(str(key))
        world["states"].put(synced_state(key))


class _Clock:
    """One sweep's Lambda: each read of a chunk of states spends SECONDS_PER_CHUNK_READ of its time."""

    def __init__(self) -> None:
        self.spent = 0.0

    def time_left(self) -> float:
        return LAMBDA_TIMEOUT - self.spent


class _TimedStates:
    def __init__(self, states: Any, clock: _Clock) -> None:
        self._states, self._clock = states, clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._states, name)

    def get_many(self, integration_id: str, keys: Any) -> Any:
        self._clock.spent += SECONDS_PER_CHUNK_READ
        assert self._clock.time_left() > 0, "the sweep read on past its Lambda's timeout"
        return self._states.get_many(integration_id, list(keys))


def sweeper(world: dict[str, Any], answer: Any, states: Any = None) -> Any:
    return SimpleNamespace(
        configs=SimpleNamespace(scheduled=lambda: {"demo": lambda: SCHEDULED}),
        members=world["members"],
        runs=SimpleNamespace(lock=lambda integration_id: None),
        efficy_for=lambda cfg: SimpleNamespace(run_query=lambda query: list(answer())),
        _apsis=lambda cfg, workers: world["apsis"],
        states=states if states is not None else world["states"],
        held=None,
        removal_breaker=None,
    )


def sweep_once(full_sync: Any, time_left: Any) -> dict[str, Any]:
    result: dict[str, Any] = scheduled_query_tags(full_sync, now=datetime.now(UTC) + DUE, time_left=time_left)["demo"]
    assert "error" not in result, result
    return result


def test_successive_sweeps_get_past_a_done_prefix_longer_than_one_sweep(world, monkeypatch) -> None:
    done = list(range(1, 31))  # 30 members done already: 300 s of reading, more than one sweep's 240 s
    mirror(world, done)
    synced(world, 40)  # joins the query afterwards, beyond the done prefix
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 1)  # one member stands for 1,000
    answers: list[dict[str, Any]] = []
    for _ in range(4):  # four sweeps, each a fresh Lambda invocation
        clock = _Clock()
        answers.append(
            sweep_once(sweeper(world, lambda: [*done, 40], _TimedStates(world["states"], clock)), clock.time_left)
        )
        if not answers[-1]["more"]:
            break
    assert 40 in tagged(world), f"the sweeps never got past the done members: {answers}"
    assert len(answers) == 2 and answers[1]["resumed_after"] == answers[0]["next"]
    assert world["members"].get("demo", QUERY) == {*done, 40}
    assert world["members"].resume_key("demo", QUERY)[0] is None, "the finished walk left its resume key"


def test_members_who_join_or_leave_below_the_resume_key_are_mirrored_by_the_next_pass(world, monkeypatch) -> None:
    """A member who joins below the stored key is not skipped for good, nor is a member who left below it kept
    tagged: the finishing sweep's snapshot still names the leaver, and the next pass starts from the lowest key."""
    synced(world, 7)
    mirror(world, [2, 3, 4, 5])
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 2)
    answer = [2, 3, 4, 5, 7]
    full_sync = sweeper(world, lambda: answer)
    short = lambda: 30.0  # noqa: E731  (under TAG_RESERVE_SECONDS from the start: one chunk a sweep)

    first = sweep_once(full_sync, short)
    assert first["more"] and first["next"] == 3 and world["members"].resume_key("demo", QUERY)[0] == 3
    answer = [1, 3, 4, 5, 7]  # 1 joins below the resume key, 2 leaves below it
    results = [sweep_once(full_sync, short)]
    while results[-1]["more"]:
        results.append(sweep_once(full_sync, short))
        assert len(results) <= 5
    assert results[0]["resumed_after"] == 3 and 7 in tagged(world)
    assert world["members"].get("demo", QUERY) == {1, 2, 3, 4, 5, 7}  # 2 stays named: the next pass untags them
    assert world["members"].resume_key("demo", QUERY)[0] is None

    results = [sweep_once(full_sync, short)]  # the next pass (the schedule is due again): from the lowest key
    while results[-1]["more"]:
        results.append(sweep_once(full_sync, short))
        assert len(results) <= 5
    assert "resumed_after" not in results[0]
    assert tagged(world) == {1, 3, 4, 5, 7}
    assert world["members"].get("demo", QUERY) == {1, 3, 4, 5, 7}


def test_a_snapshot_written_whole_since_starts_the_sweep_from_the_lowest_key(world, monkeypatch) -> None:
    """A full sync's Tags step wrote the query's snapshot between two sweeps (a new run): the key the first
    sweep stored belongs to the pass before it."""
    mirror(world, [1, 2, 3, 4])
    synced(world, 7)
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 2)
    full_sync = sweeper(world, lambda: [1, 2, 3, 4, 7])
    assert sweep_once(full_sync, lambda: 30.0)["next"] == 2
    assert world["members"].resume_key("demo", QUERY)[0] == 2

    mirror(world, [1, 2, 3, 4, 5])  # the full sync's Tags step: a new snapshot
    assert world["members"].resume_key("demo", QUERY)[0] is None
    again = sweep_once(full_sync, lambda: 30.0)
    assert "resumed_after" not in again and again["next"] == 2


def test_the_resume_key_belongs_to_the_snapshot_it_was_stored_against(world) -> None:
    members = world["members"]
    assert members.set_resume_key("demo", QUERY, 10, snapshot="") is False  # no snapshot: no head half written
    assert members.get("demo", QUERY) is None
    members.put("demo", QUERY, {1, 2}, run_id="run-1")
    since, snapshot = members.last_run("demo", QUERY), members.resume_key("demo", QUERY)[1]
    assert members.set_resume_key("demo", QUERY, 10, snapshot=snapshot)
    assert members.resume_key("demo", QUERY) == (10, snapshot)
    members.put("demo", QUERY, {1, 2, 3}, run_id="schedule-1", widened=True)  # the walk under way widens it
    assert members.resume_key("demo", QUERY) == (10, snapshot) and members.last_run("demo", QUERY) == since
    members.put("demo", QUERY, {1, 2, 3}, run_id="run-2")  # written whole (in the same second): a new pass
    assert members.resume_key("demo", QUERY)[0] is None
    assert members.set_resume_key("demo", QUERY, 20, snapshot=snapshot) is False  # stored in the old pass
    assert members.resume_key("demo", QUERY)[0] is None
