"""Run ids sort by start time (the history reads runs newest first by id, and Begin's confirmation of
`--allow-removals-up-to` reads the newest ended run): also two runs begun within one second."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from efficy_sync.store.run_records import new_run_id

ARN = "arn:aws:states:eu-west-1:123456789012:execution:full-sync:"


def test_a_run_begun_a_millisecond_later_sorts_after_whatever_its_suffix() -> None:
    earlier = datetime(2026, 12, 6, 19, 51, 12, 400_000, tzinfo=UTC)
    # two executions whose suffixes order the other way round: the suffix must not decide
    first, second = next(
        (a, b)
        for a, b in itertools.permutations((f"{ARN}r{n}" for n in range(20)), 2)
        if new_run_id(a, earlier)[-6:] > new_run_id(b, earlier)[-6:]
    )
    older = new_run_id(first, earlier)
    newer = new_run_id(second, earlier + timedelta(milliseconds=1))
    assert sorted([newer, older]) == [older, newer]


def test_ids_keep_their_readable_start_and_a_unique_suffix() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    assert new_run_id(f"{ARN}a", moment).startswith("20260102T030405678Z-")
    assert new_run_id(f"{ARN}a", moment) != new_run_id(f"{ARN}b", moment)
