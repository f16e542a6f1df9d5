"""When a query tag's own schedule asks for a run between full syncs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from efficy_sync.fullsync.tags import schedule_due

NOW = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("schedule", "last", "due"),
    [
        ("rate(1 day)", None, True),
        ("rate(1 day)", "2026-11-27T10:31:00Z", False),
        ("rate(1 day)", "2026-11-27T10:29:00Z", True),
        ("rate(6 hours)", "2026-11-28T04:29:59+00:00", True),
        ("rate(6 hours)", "2026-11-28T05:00:00+00:00", False),
        ("rate(15 minutes)", "2026-11-28T10:14:00", True),
        ("rate(15 minutes)", "2026-11-28T10:20:00", False),
        ("cron(0 3 * * ? *)", "2026-11-28T03:05:00Z", False),  # already ran after today's 03:00
        ("cron(0 3 * * ? *)", "2026-11-28T02:59:00Z", True),
        ("cron(0 12 * * ? *)", "2026-11-27T12:01:00Z", False),  # today's noon has not come yet
        ("cron(0 12 * * ? *)", "2026-11-27T11:00:00Z", True),
    ],
)
def test_schedule_due(schedule: str, last: str | None, due: bool) -> None:
    assert schedule_due(schedule, last, NOW) is due
