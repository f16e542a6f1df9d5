"""What `full-sync start ID --allow-removals-up-to N` confirms (breaker.confirmation): per kind, no more than the
admin read in the report of the run they confirm, and that run is the newest one whose gate judged removals."""

from __future__ import annotations

import json
from typing import Any

from efficy_sync.fullsync.breaker import confirmation
from efficy_sync.fullsync.report import confirm_count, render_report
from efficy_sync.safety import CONFIRMED_COUNTER, HALT_COUNTER, MIN_COUNTER, PERCENT_COUNTER, judge, verdict_of
from efficy_sync.store.run_records import Run

DELETE, VIP = "rm:delete", "rm:untag:vip"
BASES = {"base:profiles": 1000, "base:tagged:vip": 100}
THRESHOLDS = {PERCENT_COUNTER: 300, MIN_COUNTER: 2}  # limits: 30 deletes of 1000 profiles, 3 untags of 100


def ended(
    counters: dict[str, int] | None,
    status: str = "halted",
    *,
    run_id: str = "r1",
    dry: bool = False,
    kept: dict[str, int] | None = None,
) -> Run:
    """An ended run as the history gives it: its report's breaker section judged from `counters` (None: the run
    ended before its gate, so its report has none), `kept` its own counters beside them (a confirmation)."""
    own = {**(counters or {}), **(kept or {})}
    report = {"integration_id": "acme", "run_id": run_id, "status": status, "dry_run": dry}
    report["breaker"] = verdict_of(own) if counters is not None else None
    plain = {"integration_id": "acme", "run_id": run_id, "status": status, "dry_run": dry, "report": json.dumps(report)}
    return Run.from_plain({**plain, **{f"c:{k}": v for k, v in own.items()}})


HALTED = {DELETE: 40, VIP: 6, **BASES, **THRESHOLDS, HALT_COUNTER: 1}  # both over: 40 > 30, 6 > 3


def test_each_kind_is_confirmed_up_to_the_count_its_report_showed_not_n() -> None:
    """The admin read 40 deletes and 6 untags of vip over the limit and typed 40: the untags were raised to 40
    too, so when 34 more persons left vip's query meanwhile, 40 untags went out that nobody had seen."""
    counters, problem = confirmation([ended(HALTED)], 40)
    assert problem is None
    assert counters == {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 40, f"confirm:{VIP}": 6}
    confirmed = {k.removeprefix("confirm:"): v for k, v in counters.items() if k.startswith("confirm:")}
    assert not judge({DELETE: 40, VIP: 6}, BASES, 3.0, 2, confirmed).halt  # what the admin read goes out
    drifted = judge({DELETE: 40, VIP: 40}, BASES, 3.0, 2, confirmed)
    assert drifted.halt and {n for n, line in drifted.lines.items() if line["over"]} == {VIP}


def test_n_below_a_kind_s_count_confirms_n_and_that_kind_halts_again() -> None:
    counters, _ = confirmation([ended(HALTED)], 5)
    assert counters == {CONFIRMED_COUNTER: 5, f"confirm:{DELETE}": 5, f"confirm:{VIP}": 5}
    confirmed = {k.removeprefix("confirm:"): v for k, v in counters.items() if k.startswith("confirm:")}
    again = judge({DELETE: 40, VIP: 6}, BASES, 3.0, 2, confirmed)
    assert {n for n, line in again.lines.items() if line["over"]} == {DELETE, VIP}


def test_carried_kinds_take_the_count_their_newest_report_showed_else_what_they_were_confirmed_for() -> None:
    """A confirmed run that halts again on one kind carries the others to the next confirmation at the count it
    showed for them (the admin just read it); a kind whose count no report gives keeps its confirmation, up to N."""
    kept = {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 40, f"confirm:{VIP}": 6}
    again = ended({**HALTED, DELETE: 35, VIP: 9}, kept=kept)  # 9 untags: over the 6 confirmed; 35 deletes held
    assert confirmation([again], 40)[0] == {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 35, f"confirm:{VIP}": 9}
    gone = ended({**HALTED, DELETE: 0, VIP: 9}, kept=kept)  # judged: no delete any more, nothing to carry
    assert confirmation([gone], 40)[0] == {CONFIRMED_COUNTER: 40, f"confirm:{VIP}": 9}
    unjudged = Run.from_plain(
        {"integration_id": "acme", "run_id": "r2", "status": "halted", **{f"c:{k}": v for k, v in kept.items()}}
    )
    assert confirmation([unjudged], 20)[0] == {CONFIRMED_COUNTER: 20, f"confirm:{DELETE}": 20, f"confirm:{VIP}": 6}


def test_a_run_halting_on_a_second_kind_names_a_count_that_also_covers_the_kind_it_carries() -> None:
    """Confirmed for 40 deletes, a run halts on 6 untags of vip and holds the 40 deletes again: its report named
    `--allow-removals-up-to 6` (its line over the limit alone), and that N carried the deletes at 6 (the smaller
    of N and their count), so the run the report told the admin to start halted again on the 40 deletes. The
    count named covers the kinds the run carries, each still raised no higher than its own count."""
    kept = {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 40}
    again = ended(HALTED, kept=kept)  # 40 deletes within the 40 confirmed; 6 untags over their 3
    assert {n for n, line in again.report["breaker"]["removals"].items() if line["over"]} == {VIP}  # type: ignore[index]
    named = confirm_count(again.report or {})
    assert f"--allow-removals-up-to {named}" in "\n".join(render_report(again.report or {}))
    counters, problem = confirmation([again], named)
    assert problem is None and counters == {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 40, f"confirm:{VIP}": 6}
    confirmed = {k.removeprefix("confirm:"): v for k, v in counters.items() if k.startswith("confirm:")}
    assert not judge({DELETE: 40, VIP: 6}, BASES, 3.0, 2, confirmed).halt, "the named count halts again"


def test_a_dry_run_preview_then_the_real_run_confirms_what_the_preview_showed() -> None:
    kept = {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 40, f"confirm:{VIP}": 6}
    preview = ended({**HALTED, HALT_COUNTER: 0}, "succeeded", dry=True, kept=kept)
    assert not preview.report["breaker"]["would_halt"]  # type: ignore[index]
    assert confirmation([preview, ended(HALTED, run_id="r0")], 40)[0] == kept


def test_the_confirmed_run_s_report_names_each_kind_confirmed_below_n() -> None:
    kept = {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 40, f"confirm:{VIP}": 6}
    halted = ended({**HALTED, VIP: 40}, kept=kept).report
    text = "\n".join(render_report(halted or {}))
    assert "(more than the 40 confirmed; tag removals vip up to 6: the count the confirmed run showed)" in text
    sent = ended({**HALTED, HALT_COUNTER: 0}, "succeeded", kept=kept).report
    text = "\n".join(render_report(sent or {}))
    assert "confirmed by --allow-removals-up-to; tag removals vip up to 6: the count the confirmed run showed" in text
    preview = ended({**HALTED, HALT_COUNTER: 0}, "succeeded", dry=True, kept=kept).report
    assert "--allow-removals-up-to 40; tag removals vip up to 6" in "\n".join(render_report(preview or {}))
    same = {CONFIRMED_COUNTER: 40, f"confirm:{DELETE}": 40}  # every kind at N: the line stays as it was
    text = "\n".join(render_report(ended({**HALTED, VIP: 0}, kept=same).report or {}))
    assert "(more than the 40 confirmed)" in text and "the count the confirmed run showed" not in text


def test_runs_that_ended_before_their_gate_are_looked_past_to_the_run_the_admin_read() -> None:
    """A cancelled (or failed, timed out) run that never got to its gate judged nothing: confirming the halted
    run before it was refused with "the newest run (ID, cancelled) held no removals over the breaker's limit"."""
    from efficy_sync.fullsync.breaker import judged_run

    cancelled, failed = ended(None, "cancelled", run_id="r3"), ended(None, "failed", run_id="r2")
    history = [cancelled, failed, ended(HALTED)]
    assert judged_run(history) == (history[2], [cancelled, failed])
    assert confirmation(history, 40) == confirmation([ended(HALTED)], 40)
    assert confirmation(history, 40)[1] is None


def test_a_run_that_judged_or_succeeded_is_never_looked_past() -> None:
    after_gate = ended({**HALTED, HALT_COUNTER: 0, DELETE: 1, VIP: 1}, "failed", run_id="r2")  # failed in release
    counters, problem = confirmation([after_gate, ended(HALTED)], 40)
    assert counters == {} and problem is not None and "(r2, failed) held no removals over" in problem
    succeeded = ended(None, "succeeded", run_id="r2")
    assert (
        confirmation([succeeded, ended(HALTED)], 40)[1]
        == "the newest run (r2, succeeded) held no removals over the breaker's limit"
    )
    only_early = [ended(None, "cancelled", run_id="r2"), ended(None, "timed_out")]
    problem = confirmation(only_early, 40)[1]
    assert problem == "the newest runs (r2 cancelled, r1 timed_out) ended before the breaker judged their removals"
    nothing = confirmation([ended(None, "cancelled", run_id="r2"), ended({**BASES, **THRESHOLDS}, "succeeded")], 4)
    assert nothing[1] == (
        "the newest run the breaker judged (r1, succeeded; r2 cancelled ended before it did) held no removals over "
        "the breaker's limit"
    )


def test_an_emptied_query_s_untags_are_confirmed_from_the_report_the_tags_step_wrote() -> None:
    """The Tags step's answer (the report's query_tags) keeps an emptied query's held untags under `held`, not in
    its per-tag lines: read from those alone, a run that held them offered nothing to confirm."""
    report: dict[str, Any] = {
        "breaker": verdict_of({VIP: 3, **BASES, **THRESHOLDS}),  # 3 of 100: within the limit, held as emptied
        "query_tags": {"tags": {"vip": {"members": 0}}, "errors": {"vip": "answered no members"}, "held": {"vip": 3}},
    }
    plain = {"integration_id": "acme", "run_id": "r1", "status": "succeeded", "report": json.dumps(report)}
    assert confirmation([Run.from_plain(plain)], 10) == ({CONFIRMED_COUNTER: 10, f"confirm:{VIP}": 3}, None)
