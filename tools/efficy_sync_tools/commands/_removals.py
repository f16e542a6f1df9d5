"""The CLI side of the blast-radius breaker (issue 15): exit codes of a halted run, and what is held.

`full-sync start ID --allow-removals-up-to N` confirms the counts of a halted run (`--allow-removals`: any number,
and what a real-time burst held); `--follow` ends with EXIT_HALTED when the run stopped before sending them. `full-sync status ID` says when persons' removals are held (a halted run or
a real-time burst) and how to release them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from efficy_sync_tools.commands._aws import EXIT_FAILED, EXIT_HALTED, EXIT_OK


def exit_for(status: str) -> int:
    """The exit code a run's outcome gives `start --follow` and `status`."""
    if status in ("running", "succeeded"):
        return EXIT_OK
    return EXIT_HALTED if status == "halted" else EXIT_FAILED


def confirm_for(history: Sequence[Any]) -> int:
    """The N `full-sync status` names for `--allow-removals-up-to N`, or 0 (name the blanket flag): read from the
    run Begin confirms (breaker.judged_run), not the newest run. Read from the newest alone, a halted run
    followed by a run cancelled, failed or timed out before its gate named only `--allow-removals` (any number,
    unjudged), though Begin confirms the halted run's count. Named only when that run's breaker would halt (a
    halted run, or a dry run that would) and Begin accepts the count (breaker.confirmation)."""
    from efficy_sync.fullsync.breaker import confirmation, judged_run
    from efficy_sync.fullsync.report import confirm_count, current_report

    run, _ = judged_run(history)
    if run is None or not (run.status == "halted" or (run.dry_run and _would_halt(run))):
        return 0
    count = confirm_count(current_report(run))
    return count if count > 0 and confirmation(history, count)[1] is None else 0


def _would_halt(run: Any) -> bool:
    return bool(((run.report or {}).get("breaker") or {}).get("would_halt"))


def held_document(state_table: str, integration_id: str) -> dict[str, Any]:
    """Persons whose removals wait for an admin, and whether the real-time breaker is open."""
    from efficy_sync.store.removals import HeldRemovals, RemovalBreaker

    return {
        "held_persons": HeldRemovals(state_table).count(integration_id),
        "realtime_breaker": RemovalBreaker(state_table).tripped(integration_id),
    }


def held_lines(state_table: str, integration_id: str, confirm: int = 0) -> list[str]:
    """Nothing when nothing is held; otherwise what is held and the command that sends it. `confirm`: the N the
    report of the run Begin would confirm names (confirm_for): its holds are confirmed with `--allow-removals-up-to N` (a run that finds
    more halts again), unless the real-time breaker is open, which only `--allow-removals` closes."""
    held = held_document(state_table, integration_id)
    if not held["held_persons"] and not held["realtime_breaker"]:
        return []
    lines = [f"  removals held by the blast-radius breaker: {held['held_persons']:,} person(s)"]
    tripped = held["realtime_breaker"]
    if tripped:
        lines.append(
            f"  real-time breaker open since {tripped.get('tripped_at')} "
            f"({tripped.get('removals')} removals in its window, limit {tripped.get('limit')})"
        )
    lines.append(f"  Check them (full-sync start {integration_id} --dry-run), then send them:")
    if confirm and not tripped:
        lines.append(f"    efficy-sync full-sync start {integration_id} --allow-removals-up-to {confirm} --follow")
        lines.append(
            "  (the counts the breaker's last judged run showed: a run that finds more halts again; "
            "--allow-removals sends any number)"
        )
    else:
        lines.append(f"    efficy-sync full-sync start {integration_id} --allow-removals --follow")
    return lines
