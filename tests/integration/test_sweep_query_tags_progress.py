"""A query tag with a schedule of its own is mirrored by the sweeper (fullsync/sweep.py), which called
mirror_query_tags with no `after`: each sweep started again from the lowest key. Once the mirror checked the time
between chunks read, a sweep whose time was spent reading the members already done answered `more` having sent
nothing, and every later sweep did the same: the members past the done ones were never tagged, and the snapshot
(its last run) never written. Each sweep now resumes after the last one's `next` (test_sweep_query_tags_resume)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import efficy_sync.fullsync.tags as tags_module
from efficy_sync.fullsync.sweep import scheduled_query_tags

from tests.integration.test_fullsync_tags import CFG, mirror, tagged, world  # noqa: F401 (world: the fixture)


def test_scheduled_sweeps_out_of_time_after_reading_the_done_members_still_make_progress(world, monkeypatch) -> None:
    mirror(world, [1, 2])  # 1 and 2 already hold the tag; 3, 4 and 5 join the query afterwards
    assert tagged(world) == {1, 2}
    monkeypatch.setattr(
        tags_module, "TAG_READ_CHUNK", 2, raising=False
    )  # stands for 1,000: the done prefix is one chunk
    query = CFG.tags.queries[0].model_copy(update={"schedule": "rate(1 hours)"})
    cfg = CFG.model_copy(update={"tags": CFG.tags.model_copy(update={"queries": [query]})})
    full_sync = SimpleNamespace(
        configs=SimpleNamespace(scheduled=lambda: {"demo": lambda: cfg}),
        members=world["members"],
        runs=SimpleNamespace(lock=lambda integration_id: None),
        efficy_for=lambda cfg: SimpleNamespace(run_query=lambda q: [1, 2, 3, 4, 5]),
        _apsis=lambda cfg, workers: world["apsis"],
        states=world["states"],
        held=None,
        removal_breaker=None,
    )
    answers: list[Any] = []
    for _ in range(5):  # five sweeps, each short of time (under the 45 s reserve, over the last 15 s) from the start
        answers.append(
            scheduled_query_tags(full_sync, now=datetime.now(UTC) + timedelta(hours=2), time_left=lambda: 30.0)
        )  # type: ignore[arg-type]
    assert tagged(world) == {1, 2, 3, 4, 5}, f"the sweeps never got past the done members: {answers}"
