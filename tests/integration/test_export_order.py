"""A full sync says when Efficy's export is not in K_CONTACT order (fullsync/plan.py `in_key_order`).

The plan's count, the tail and Seams assume that order, which Efficy does not document (contract §4). In another
order (by D_CHANGE here: the simulator's `export_order`) a person a change moves during the run across a page
boundary can be in no page, and the report of a run over such an export said nothing of it. The real FullSync steps against the
simulators (fullsync_harness.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from efficy_sync.fullsync.report import render_report

from tests.integration.fullsync_harness import World, apsis_sim, make_world, person, raw_config  # noqa: F401  (fixtures)


@pytest.fixture
def changed_last(make_world: Callable[..., World]) -> Iterator[World]:
    """60 persons saved from the highest key down, so that the export by D_CHANGE lists them in reverse."""
    w = make_world()
    w.efficy_sim.upsert_persons([person(k) for k in range(60, 0, -1)])
    w.efficy_sim.export_order = "D_CHANGE"  # the module's simulator: the next test's reset sets it back
    yield w


def test_an_export_in_another_order_is_synced_and_reported(changed_last: World) -> None:
    out = changed_last.run()
    report = out["report"]
    assert report["status"] == "succeeded" and changed_last.in_apsis() == set(range(1, 61))
    # counted by the pages once each (a review found Seams' windows counting their re-reads too: 373 of 60)
    assert 0 < report["efficy_unordered_records"] < 60
    assert "out of K_CONTACT order" in "\n".join(render_report(report))
    # no delete, none counted: the search for the plan's last key by K_CONTACT counted 60, and Seams re-read 330
    assert report["seams"] == {"deletes": 0, "windows": 0, "persons_checked": 0}


def test_a_delete_in_an_export_of_another_order_is_counted_by_the_record_count(changed_last: World) -> None:
    done = {"deleted": False}

    def delete_after_the_first_page(page: int, size: int) -> None:
        if (page, size) == (2, 5) and not done["deleted"]:  # a page worker's read, not the plan's one-record probes
            done["deleted"] = True
            changed_last.efficy_sim.delete_person(30)

    changed_last.hook = delete_after_the_first_page
    report = changed_last.run()["report"]
    assert report["seams"]["deletes"] == 1, report["seams"]
    assert changed_last.in_apsis() >= set(range(1, 61)) - {30}


def test_the_key_order_the_sync_assumes_reports_nothing(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.efficy_sim.upsert_persons([person(k) for k in range(1, 61)])
    report = w.run()["report"]
    assert report["efficy_unordered_records"] == 0 and "K_CONTACT order" not in "\n".join(render_report(report))
