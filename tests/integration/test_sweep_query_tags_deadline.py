"""The sweeper's query-tag mirror (fullsync/sweep.py: scheduled_query_tags), when it started every sweep from the
lowest key, read on past its Lambda's deadline while it looked for its first batch: on a done prefix longer than
the sweep's time the cleanup Lambda was killed at its timeout (240 s) on every sweep (CleanupErrorsAlarm, and the
other integrations' scheduled tags lost that invocation). The sweep now resumes after the last one's `next` (kept
with the query's snapshot) and stops TAG_RESERVE_SECONDS before the timeout like every other caller."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import efficy_sync.fullsync.tags as tags_module
from efficy_sync.fullsync.sweep import scheduled_query_tags

from tests.integration.test_fullsync_tags import CFG, mirror, tagged, world  # noqa: F401 (world: the fixture)

LAMBDA_TIMEOUT = 240.0  # template.yaml, CleanupFunction
SECONDS_PER_CHUNK_READ = 10.0  # stands for reading TAG_READ_CHUNK states (about a second for 1,000)


class _Killed(BaseException):
    """Lambda ends an invocation at its timeout: nothing after that point runs."""


class _Clock:
    def __init__(self) -> None:
        self.spent = 0.0
        self.lowest_left = LAMBDA_TIMEOUT

    def time_left(self) -> float:
        return LAMBDA_TIMEOUT - self.spent


class _TimedStates:
    """The state store, where each read of a chunk of states takes SECONDS_PER_CHUNK_READ of the Lambda's time."""

    def __init__(self, states: Any, clock: _Clock) -> None:
        self._states = states
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._states, name)

    def get_many(self, integration_id: str, keys: Any) -> Any:
        keys = list(keys)
        self._clock.spent += SECONDS_PER_CHUNK_READ
        self._clock.lowest_left = min(self._clock.lowest_left, self._clock.time_left())
        if self._clock.time_left() < 0:
            raise _Killed("Task timed out")
        return self._states.get_many(integration_id, keys)


def test_a_sweep_whose_done_prefix_outlasts_its_time_stops_before_the_lambda_timeout(world, monkeypatch) -> None:
    done = list(range(1, 31))  # 30 members hold the tag already: 300 s of reading, more than a sweep has
    mirror(world, done)
    monkeypatch.setattr(tags_module, "TAG_READ_CHUNK", 1, raising=False)  # one member stands for 1,000
    query = CFG.tags.queries[0].model_copy(update={"schedule": "rate(1 hours)"})
    cfg = CFG.model_copy(update={"tags": CFG.tags.model_copy(update={"queries": [query]})})
    lowest: list[float] = []
    killed = 0
    for sweep_number in range(3):  # three sweeps, each a fresh Lambda invocation
        clock = _Clock()
        full_sync = SimpleNamespace(
            configs=SimpleNamespace(scheduled=lambda: {"demo": lambda: cfg}),
            members=world["members"],
            runs=SimpleNamespace(lock=lambda integration_id: None),
            efficy_for=lambda cfg: SimpleNamespace(run_query=lambda q: [*done, 31]),
            _apsis=lambda cfg, workers: world["apsis"],
            states=_TimedStates(world["states"], clock),
            held=None,
            removal_breaker=None,
        )
        try:
            scheduled_query_tags(
                full_sync,  # type: ignore[arg-type]
                now=datetime.now(UTC) + timedelta(hours=2 * (sweep_number + 1)),
                time_left=clock.time_left,
            )
        except _Killed:
            killed += 1
        lowest.append(clock.lowest_left)
    assert killed == 0, f"{killed} of 3 sweeps read on past the Lambda's timeout (seconds left: {lowest})"
