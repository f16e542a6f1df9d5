"""A retried Imports step counted again the persons whose outcome it met again. The attempt that failed (an
outage of another person) had counted what it did; the retry, whose token was counted, counted as new work every
person not unchanged or skipped, and every counter but the census:
- a person who failed for their own data (an APSIS 400, recorded and acknowledged) keeps the change to do in
  their state, so the retry synced and counted them again: failed=2, persons=31 for a file of 30 with one
  failure. A step run again after a lost reply did the same to a file that had completed;
- a person whose removals the breaker held was counted as updated again (the held removal is planned again),
  with their removal counts;
- a skipped person's skip reason was counted again (only `persons` and `skipped` were the census).
Each person is now counted once, by what their outcome leaves for a retry (fullsync/file_counts.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from efficy_sync.clients.errors import ApsisUnavailable
from efficy_sync.config import IntegrationConfig, config_from_dict
from efficy_sync.fullsync.collect import Collector, QueuedPage
from efficy_sync.sync import PersonSyncer

from tests.integration.test_import_layout import (  # noqa: F401  (world is the fixture)
    CFG,
    collector,
    person,
    queue_pages,
    world,
)
from tests.integration.test_import_retry_counts import RunCounters
from tests.memory_store import MemoryPersonStateStore

REFUSED = {
    "path_regex": r"/profiles/6/", "method": "PATCH", "status": 400, "count": 50,
    "body": '{"title": "Bad Request", "status": 400, "detail": "invalid value"}',
    "content_type": "application/problem+json",
}  # fmt: skip


class HoldAll:
    """The breaker, tripped: every removal is held."""

    def admit(self, key: int, removals: list[Any]) -> bool:
        return False


def loaded(world: dict[str, Any], extra: dict[str, Any] | None = None) -> MemoryPersonStateStore:
    world["efficy_sim"].upsert_persons([{**person(k, [12]), **(extra or {})} for k in range(1, 31)])
    states = MemoryPersonStateStore()
    collector(world, states, rows=100, counted=[]).run(queue_pages(world, states, pages=1, size=30), {})
    return states


def stepper(
    world: dict[str, Any],
    states: MemoryPersonStateStore,
    counters: RunCounters,
    cfg: IntegrationConfig = CFG,
    **kw: Any,
) -> Any:
    queued = [QueuedPage(0, 0, 30, tuple(range(1, 31)))]
    gate = HoldAll() if kw.get("hold_removals") else None

    def step() -> dict[str, Any]:  # one call of the Imports step (import_step.imports_step's wiring)
        syncer = PersonSyncer(cfg, world["apsis"], states, email_lookup=lambda address: [], removal_gate=gate)
        return Collector(
            cfg, efficy=world["efficy"], apsis=world["apsis"], states=states, syncer=syncer, import_rows=100,
            on_counters=counters, poll_interval=0.01, **kw,
        ).run(queued, {}, start=0)  # fmt: skip

    return step


def test_a_person_refused_for_their_data_is_counted_once_across_a_retry(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    states = loaded(world)
    # everyone's first name changes (import rows); persons 5 and 6 also have their mobile cleared (per person)
    world["efficy_sim"].upsert_persons(
        [{**person(k, [12]), "FIRSTNAME": f"G{k}", **({"MOBILE": None} if k in (5, 6) else {})} for k in range(1, 31)]
    )
    counters = RunCounters()
    step = stepper(world, states, counters)

    sim.add_fault(**REFUSED)  # person 6's value is refused: their own failure, recorded
    sim.add_fault(path_regex=r"/profiles/5/", method="PATCH", status=503, count=50)  # an outage for person 5
    with pytest.raises(ApsisUnavailable):
        step()
    sim.clear_faults()
    sim.add_fault(**REFUSED)  # APSIS still refuses person 6's value
    step()  # the state machine's Retry: same input (start 0)

    assert states.get(CFG.integration_id, 6).last_outcome == "failed"
    total = Counter(counters.total)
    assert total["failed"] == 1 and total["persons"] == 30, (
        f"one person of 30 failed; the report says failed={total['failed']}, persons={total['persons']}, "
        f"updated={total['updated']}"
    )
    assert total["updated"] == 29


def test_a_step_run_again_after_a_lost_reply_counts_a_recorded_failure_once(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    states = loaded(world)
    world["efficy_sim"].upsert_persons(
        [{**person(k, [12]), "FIRSTNAME": f"G{k}", **({"MOBILE": None} if k == 6 else {})} for k in range(1, 31)]
    )
    counters = RunCounters()
    step = stepper(world, states, counters)
    sim.add_fault(**REFUSED)
    step()
    step()  # Step Functions runs the step again: its reply was lost

    total = Counter(counters.total)
    assert total["failed"] == 1 and total["persons"] == 30 and total["updated"] == 29, (
        f"failed={total['failed']}, persons={total['persons']}, updated={total['updated']}"
    )


def test_a_person_whose_removals_the_breaker_holds_is_counted_once_across_a_retry(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    states = loaded(world)
    # everyone's first name changes; persons 3 and 4 leave the newsletter (an opt-out: held); person 5's mobile
    # is cleared (per person)
    world["efficy_sim"].upsert_persons(
        [
            {**person(k, [] if k in (3, 4) else [12]), "FIRSTNAME": f"G{k}", **({"MOBILE": None} if k == 5 else {})}
            for k in range(1, 31)
        ]
    )
    counters = RunCounters()
    step = stepper(world, states, counters, hold_removals=True)

    sim.add_fault(path_regex=r"/profiles/5/", method="PATCH", status=503, count=50)
    with pytest.raises(ApsisUnavailable):
        step()
    sim.clear_faults()
    step()

    total = Counter(counters.total)
    removals = {name: n for name, n in total.items() if name.startswith("rm:")}
    assert total["persons"] == 30 and total["updated"] == 30, f"persons={total['persons']}, updated={total['updated']}"

    assert sum(removals.values()) == 2, f"two opt-outs held; the report says {removals}"


def test_a_skipped_persons_reason_is_counted_once_across_a_retry(world: dict[str, Any]) -> None:
    sim = world["apsis_sim"]
    states = loaded(world, {"ROBINSON": "0"})
    cfg = config_from_dict(
        {
            **CFG.model_dump(mode="json", exclude_none=True),
            "sync_conditions": [{"field": "ROBINSON", "not_equals": "1"}],
        }
    )
    # everyone's first name changes; person 7 joins the Robinson list (skipped); person 5's mobile is cleared
    world["efficy_sim"].upsert_persons(
        [
            {**person(k, [12]), "FIRSTNAME": f"G{k}", "ROBINSON": "1" if k == 7 else "0"}
            | ({"MOBILE": None} if k == 5 else {})
            for k in range(1, 31)
        ]
    )
    counters = RunCounters()
    step = stepper(world, states, counters, cfg)

    sim.add_fault(path_regex=r"/profiles/5/", method="PATCH", status=503, count=50)
    with pytest.raises(ApsisUnavailable):
        step()
    sim.clear_faults()
    step()

    total = Counter(counters.total)
    reasons = {name: n for name, n in total.items() if name.startswith("skip:")}
    assert total["persons"] == 30 and total["skipped"] == 1 and total["updated"] == 29, (
        f"persons={total['persons']}, skipped={total['skipped']}, updated={total['updated']}"
    )
    assert sum(reasons.values()) == 1, f"one person skipped; the report says {reasons}"
