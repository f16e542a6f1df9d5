"""The blast-radius breaker in the query-tag mirror: held untags are not sent, stay in the member snapshot, and
the release (or the next run) untags them. Against the APSIS simulator over HTTP and moto's DynamoDB."""

from __future__ import annotations

from typing import Any

from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.breaker import Breaker

from tests.integration.test_fullsync_tags import CFG, mirror, tagged, world  # noqa: F401 (world: the fixture)


def test_held_untags_are_not_sent_and_the_next_mirror_without_hold_sends_them(world: dict[str, Any]) -> None:
    mirror(world, [1, 2, 3, 4, 5])
    asked: list[tuple[str, int, int]] = []

    def hold(tag: str, untags: int, former: int) -> bool:
        asked.append((tag, untags, former))
        return True

    held = mirror(world, [1, 2], hold_untags=hold)

    assert asked == [("vip", 3, 5)]
    assert held["held"] == {"vip": 3} and held["untags"] == {"vip": 3} and held["untagged"] == 0
    assert tagged(world) == {1, 2, 3, 4, 5}  # nothing removed in APSIS One
    assert world["members"].get("demo", 3618) == {1, 2, 3, 4, 5}  # the held former members stay in the snapshot

    released = mirror(world, [1, 2])
    assert released["untagged"] == 3 and tagged(world) == {1, 2}
    assert world["members"].get("demo", 3618) == {1, 2}


def test_the_scheduled_mirror_holds_only_beyond_the_threshold(world: dict[str, Any]) -> None:
    raw = CFG.model_dump(mode="json", exclude_none=True)
    cfg = config_from_dict({**raw, "safety": {"max_removal_percent": 5, "min_removals": 3}})
    hold = Breaker(full_sync=None, held=None, breaker=None).scheduled_hold(cfg)  # type: ignore[arg-type]
    assert hold("vip", 2, 5) is False  # under the floor
    assert hold("vip", 3, 5) is True  # 60 % of the former members, and at the floor
    assert hold("vip", 3, 100) is False  # 3 % of 100
