"""Counting outcomes into the run's counters, and the report built and printed from them."""

from __future__ import annotations

from pathlib import Path

from efficy_sync.config import load_config_file
from efficy_sync.fullsync.report import build_report, render_report, skip_label, tally
from efficy_sync.fullsync.runs import Run
from efficy_sync.person_plan import CreateProfile, DeleteProfile, PatchAttributes, PatchTags, SetConsent
from efficy_sync.sync import Outcome

CFG = load_config_file(Path(__file__).resolve().parents[2] / "examples" / "demo.yaml")
NEWS = "usercreated.topics.newsletter-ab12"


def test_a_new_person_counts_as_created_with_its_consents_and_tags() -> None:
    ops = [
        CreateProfile("1"),
        PatchAttributes("1", {"a": 1}),
        SetConsent("1", NEWS, "email", "opt-in"),
        PatchTags("1", {"newsletter-readers": True}),
    ]
    counts = tally(Outcome(1, "dry_run", ops))
    assert counts == {
        "persons": 1,
        "created": 1,
        f"consent+:{NEWS}|email": 1,
        "tag+:newsletter-readers": 1,
    }


def test_updates_withdrawals_and_unchanged() -> None:
    ops = [SetConsent("1", NEWS, "email", "opt-out"), PatchTags("1", {"newsletter-readers": False})]
    assert tally(Outcome(1, "synced", ops)) == {
        "persons": 1,
        "updated": 1,
        f"consent-:{NEWS}|email": 1,
        "tag-:newsletter-readers": 1,
    }
    assert tally(Outcome(1, "unchanged")) == {"persons": 1, "unchanged": 1}
    # found by probing: a person whose only change was an opt-out held by the breaker's gate counted as
    # unchanged (the dry run said "would be updated"); the release sends it, and the page counts it updated
    held = Outcome(1, "unchanged", removals=[object()], held=True)
    assert tally(held) == {"persons": 1, "updated": 1}
    assert tally(Outcome(1, "failed", reason="400")) == {"persons": 1, "failed": 1}
    assert tally(Outcome(1, "stale")) == {"persons": 1, "stale": 1}


def test_skips_count_per_condition_and_a_planned_delete_is_counted() -> None:
    person = {"K_CONTACT": 5, "OPENED": "1", "ROBINSON": "1", "EMAIL1": "x@example.com"}
    label = skip_label(CFG, person)
    assert label == "ROBINSON equals '0'"  # the rule, never the person's value
    skipped = Outcome(5, "skipped", reason="ROBINSON equals '0' failed: value is '1'")
    assert tally(skipped, skip_reason=label) == {"persons": 1, "skipped": 1, "skip:ROBINSON equals '0'": 1}
    deleting = Outcome(5, "dry_run", [DeleteProfile("5")], reason="ROBINSON ...")
    assert tally(deleting, skip_reason=label)["deleted"] == 1
    assert skip_label(CFG, {"K_CONTACT": "x"}) == "no valid K_CONTACT"


def _run(counters: dict[str, int], dry_run: bool = True) -> Run:
    return Run(
        integration_id="acme",
        run_id="20260101T000000Z-abc123",
        execution_arn="arn",
        dry_run=dry_run,
        status="succeeded",
        started_at="2026-01-01T00:00:00Z",
        pages_total=3,
        counters=counters,
    )


def test_report_adds_up_counters_and_query_tags_and_prints_them() -> None:
    counters = {
        "pages_done": 2,
        "persons": 10,
        "created": 6,
        "unchanged": 1,
        "skipped": 3,
        "skip:OPENED equals '1'": 2,
        "skip:ROBINSON equals '0'": 1,
        f"consent+:{NEWS}|email": 4,
        f"consent-:{NEWS}|email": 1,
        "tag+:newsletter-readers": 4,
        "parked_messages": 7,
        "requeued": 5,
    }
    query_tags = {"tags": {"vip": {"added": 2, "removed": 1, "members": 3}}, "errors": {}}
    failed = [{"page": 2, "attempts": 6, "error": "EfficyUnavailable: 504"}]
    report = build_report(
        _run(counters), status="succeeded", failed_pages=failed, query_tags=query_tags, ended_at="2026-01-01T00:01:05Z"
    )
    assert report["persons"]["created"] == 6 and report["persons"]["skipped"] == 3
    assert report["consents"] == {f"{NEWS} [email]": {"gained": 4, "lost": 1}}
    assert report["tags"] == {"newsletter-readers": {"added": 4, "removed": 0}, "vip": {"added": 2, "removed": 1}}
    assert report["deferred"] == {"messages": 7, "requeued": 5}
    assert report["duration_s"] == 65.0
    text = "\n".join(render_report(report))
    assert "Dry run of acme" in text and "SUCCEEDED in 1m05s" in text
    assert "would be created" in text and "nothing was written" in text
    assert "page 2 failed after 6 attempt(s): EfficyUnavailable: 504" in text
    assert "OPENED equals '1'" in text
    real = "\n".join(render_report(build_report(_run(counters, dry_run=False), status="succeeded")))
    assert "would be" not in real and "nothing was written" not in real


def test_the_seams_show_only_after_deletes() -> None:
    quiet = build_report(_run({"persons": 10}), status="succeeded")
    assert quiet["seams"] == {"deletes": 0, "windows": 0, "persons_checked": 0}
    assert "boundar" not in "\n".join(render_report(quiet))
    counters = {"persons": 10, "seam_shift": 2, "seam_windows": 1, "seam_persons": 2, "parked_deletes": 2}
    text = "\n".join(render_report(build_report(_run(counters), status="succeeded")))
    assert "page boundaries re-read after 2 deletes in Efficy during the sync: 1 boundary, 2 persons checked" in text


def test_progress_lines_show_pages_persons_deferred_changes_and_an_eta() -> None:
    from datetime import UTC, datetime

    from efficy_sync_tools.commands.full_sync import progress_lines

    run = Run(
        integration_id="acme",
        run_id="20260101T000000Z-abc123",
        execution_arn="arn",
        dry_run=False,
        status="running",
        started_at="2026-01-01T00:00:00Z",
        planned_at="2026-01-01T00:00:10Z",
        pages_total=20,
        persons_estimate=10_000,
        counters={
            "pages_done": 5,
            "persons": 2_500,
            "created": 2_000,
            "unchanged": 300,
            "skipped": 200,
            "parked_messages": 9,
        },
    )
    lines = progress_lines(run, deferred_persons=7, now=datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC))
    assert lines[0].startswith("full sync of acme  run 20260101T000000Z-abc123  RUNNING  elapsed 1m00s")
    assert "[#######---------------------] 5/20 pages  25%  ETA 2m30s" in lines[1]  # 2,500 read in 50 s
    assert (
        "2,300 synced (2,000 created, 0 updated, 300 unchanged) · 200 skipped · 0 failed · 2,500 read of ~10,000"
        in lines[2]
    )
    assert lines[3].strip() == "deferred real-time changes: 9 messages (7 persons waiting)"
    one = progress_lines(run, deferred_persons=1)[3]
    assert "(1 person waiting)" in one


def _running(pages_total: int, pages_done: int, read: int, **extra: object) -> Run:
    return Run(
        integration_id="acme",
        run_id="r",
        execution_arn="arn",
        dry_run=bool(extra.pop("dry_run", False)),
        status="running",
        started_at="2026-01-01T00:00:00Z",
        planned_at="2026-01-01T00:00:00Z",
        pages_total=pages_total,
        persons_estimate=pages_total * 500,
        counters={"pages_done": pages_done, "persons": read, "created": read, **extra},
    )


def test_eta_counts_the_last_pages_at_one_worker_each() -> None:
    """5 of 7 pages of 500 done in 60 s by 5 workers side by side (60 s a page): the 2 pages left run at one
    worker's pace each, so about 60 s remain, not the 24 s the whole run's rate would promise."""
    from datetime import UTC, datetime

    from efficy_sync_tools.commands.full_sync import progress_lines

    run = _running(7, 5, 2_500)
    line = progress_lines(run, 0, now=datetime(2026, 1, 1, 0, 1, 0, tzinfo=UTC))[1]
    assert "ETA 1m00s" in line  # 1,000 left at 2,500 / 60 s / 5 workers = 8.3 persons/s per worker, 2 workers


def test_progress_when_every_page_is_done_says_what_is_left_and_a_dry_run_says_would() -> None:
    from efficy_sync_tools.commands.full_sync import progress_lines

    lines = progress_lines(_running(7, 7, 3_500), 0)
    assert "ETA" not in lines[1] and "finishing (page boundaries, query tags, report)" in lines[1]
    dry = progress_lines(_running(7, 2, 1_000, dry_run=True), 0)[2]
    assert "1,000 would sync (1,000 would create, 0 would update, 0 unchanged)" in dry
    assert " created," not in dry


def test_progress_in_import_mode_once_the_pages_are_done_counts_the_files() -> None:
    """The Imports step after the pages is most of a big first load (50 files of 20,000 for a million persons):
    the bar says how many files are done, not only "finishing"."""
    from efficy_sync_tools.commands.full_sync import progress_lines

    run = _running(7, 7, 3_500, import_files=4, import_files_done=1, import_rows=1_000)
    assert "every page done; importing: 1/4 files (1,000 rows sent)" in progress_lines(run, 0)[1]
    assert "ETA" not in progress_lines(run, 0)[1]  # no file's time yet: APSIS's processing time is unknown


def test_import_eta_is_the_files_left_at_the_mean_time_of_a_file_three_at_a_time() -> None:
    """A million-person first load spends most of its time importing; the bar said how many files were done
    but not when the run would end."""
    from efficy_sync_tools.commands.full_sync import progress_lines

    # 2 of 50 files done in 180 s of file time: 90 s a file, 48 left three at a time = 1,440 s
    run = _running(7, 7, 40_000, import_files=50, import_files_done=2, import_rows=40_000, import_file_ms=180_000)
    assert progress_lines(run, 0)[1].endswith("importing: 2/50 files (40,000 rows sent)  ETA 24m00s")
    # two files left: they import side by side, so one file's time
    run = _running(7, 7, 40_000, import_files=4, import_files_done=2, import_rows=40_000, import_file_ms=180_000)
    assert progress_lines(run, 0)[1].endswith("ETA 1m30s")
    # every file done: the query tags and the report are left, no file ETA
    run = _running(7, 7, 40_000, import_files=2, import_files_done=2, import_rows=40_000, import_file_ms=180_000)
    assert "ETA" not in progress_lines(run, 0)[1]


def test_import_rows_and_created_persons_add_up_on_the_same_line() -> None:
    """The demo printed "2,486 created" above "bulk imports: 6 file(s), 2,472 rows" without saying why."""
    from efficy_sync.fullsync.report import render_report

    report = {
        "integration_id": "demo",
        "run_id": "r",
        "status": "succeeded",
        "persons": {"persons": 3018, "created": 2486, "updated": 0, "unchanged": 1, "skipped": 531},
        "pages": {"done": 7, "total": 7},
        "imports": {"files": 6, "rows": 2472},
    }
    line = next(x for x in render_report(report) if "bulk imports" in x)
    assert (
        line.strip()
        == "bulk imports: 6 file(s), 2,472 rows; the other 14 written person by person (pages with few changes)"
    )
    report["persons"]["created"] = 2472
    line = next(x for x in render_report(report) if "bulk imports" in x)
    assert line.strip() == "bulk imports: 6 file(s), 2,472 rows"


def test_following_reads_soon_after_the_start_then_once_per_interval() -> None:
    """A run of a few pages ends the command within a fraction of a second; a long one costs a read a second."""
    from itertools import islice

    from efficy_sync_tools.commands.full_sync import _pauses

    waits = list(islice(_pauses(1.0), 8))
    assert waits[0] == 0.2 and waits == sorted(waits) and waits[-1] == 1.0
    assert sum(waits[:3]) < 1.0  # three reads in the second where the fixed pace made one
    assert list(islice(_pauses(0.05), 3)) == [0.05, 0.05, 0.05]  # a shorter --interval is kept
