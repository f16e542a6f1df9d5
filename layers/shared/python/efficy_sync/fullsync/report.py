"""What a full sync did (or, in a dry run, would do): counters per person, the run report, and its text form.

Page workers turn each person's outcome into counter increments (`tally`); the run item adds them up
atomically; Finish turns the totals into the report (`build_report`) that the execution returns and the CLI
prints (`render_report`). A dry run plans the very same operations without sending them, so the same
counters read as "would create / would update / consents that would be gained or lost".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..conditions import evaluate
from ..config import IntegrationConfig
from ..mapping import profile_key_of
from ..person_plan import CreateProfile, DeleteProfile, PatchTags, SetConsent
from ..safety import describe, verdict_of
from ..sync import Outcome
from .failed_pages import RANGES, failed_summary

NO_KEY = "no valid K_CONTACT"
PERSON_COUNTERS = ("created", "updated", "unchanged", "skipped", "failed", "stale", "deleted")


def skip_label(cfg: IntegrationConfig, person: Mapping[str, Any]) -> str:
    """The first sync condition the person fails, as configured (never the person's value: reports travel)."""
    if profile_key_of(person.get("K_CONTACT")) is None:
        return NO_KEY
    failure = evaluate(cfg.sync_conditions, person).first_failure
    return failure.condition.describe() if failure is not None else "conditions"


def is_skip(outcome: Outcome) -> bool:
    """Skipped persons carry the reason; in a dry run a skip that plans operations reads "dry_run"."""
    return outcome.result == "skipped" or (outcome.result == "dry_run" and bool(outcome.reason))


def tally(outcome: Outcome, *, skip_reason: str | None = None) -> Counter[str]:
    """Counter increments for one person's outcome."""
    counts: Counter[str] = Counter(persons=1)
    if outcome.result in ("failed", "stale"):
        counts[outcome.result] += 1
        return counts
    ops = outcome.operations
    if is_skip(outcome) or outcome.result == "deleted":
        counts["skipped"] += 1
        counts[f"skip:{skip_reason or 'conditions'}"] += 1
        if any(isinstance(op, DeleteProfile) for op in ops):
            counts["deleted"] += 1
    elif not ops and not outcome.held:
        counts["unchanged"] += 1
    elif not ops:  # only removals, held by the breaker's gate: the release sends them (as a dry run counts them)
        counts["updated"] += 1
    elif any(isinstance(op, CreateProfile) for op in ops):
        counts["created"] += 1
    else:
        counts["updated"] += 1
    for op in ops:
        if isinstance(op, SetConsent):
            sign = "+" if op.type == "opt-in" else "-"
            counts[f"consent{sign}:{op.topic}|{op.channel}"] += 1
        elif isinstance(op, PatchTags):
            for tag, on in op.tags.items():
                counts[f"tag{'+' if on else '-'}:{tag}"] += 1
    return counts


def _prefixed(counters: Mapping[str, int], prefix: str) -> dict[str, int]:
    return {k[len(prefix) :]: v for k, v in sorted(counters.items()) if k.startswith(prefix) and v}


def build_report(
    run: Any,
    *,
    status: str,
    failed_pages: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
    query_tags: Mapping[str, Any] | None = None,
    requeued: int = 0,
    ended_at: str | None = None,
) -> dict[str, Any]:
    """The run's report from its counters; `run` is a runs.Run. `failed_pages`: every page not done, or a
    report's "pages" already summarised; the report keeps a bounded summary of them (failed_pages.py)."""
    c = run.counters
    consents: dict[str, dict[str, int]] = {}
    for sign, word in (("+", "gained"), ("-", "lost")):
        for slot, n in _prefixed(c, f"consent{sign}:").items():
            topic, _, channel = slot.rpartition("|")
            consents.setdefault(f"{topic} [{channel}]", {"gained": 0, "lost": 0})[word] += n
    tags: dict[str, dict[str, int]] = {}
    for sign, word in (("+", "added"), ("-", "removed")):
        for tag, n in _prefixed(c, f"tag{sign}:").items():
            tags.setdefault(tag, {"added": 0, "removed": 0})[word] += n
    for tag, change in (query_tags or {}).get("tags", {}).items():
        entry = tags.setdefault(tag, {"added": 0, "removed": 0})
        entry["added"] += int(change.get("added", 0))
        entry["removed"] += int(change.get("removed", 0))
    ended = ended_at or run.ended_at
    return {
        "integration_id": run.integration_id,
        "run_id": run.run_id,
        "status": status,
        "dry_run": run.dry_run,
        "write_mode": run.write_mode,
        "config_version": getattr(run, "config_version", 0),
        "started_by": getattr(run, "started_by", ""),
        "started_via": getattr(run, "started_via", ""),
        "started_at": run.started_at,
        "ended_at": ended,
        "duration_s": _seconds_between(run.started_at, ended),
        "pages": {
            "total": run.pages_total or 0,
            "done": c.get("pages_done", 0),
            **failed_summary(failed_pages),
        },
        "persons": {name: c.get(name, 0) for name in ("persons", *PERSON_COUNTERS)},
        "skipped_by_condition": _prefixed(c, "skip:"),
        "consents": consents,
        "tags": dict(sorted(tags.items())),
        "query_tags": dict(query_tags or {}),
        "deferred": {"messages": c.get("parked_messages", 0), "requeued": requeued or c.get("requeued", 0)},
        "imports": {
            "files": c.get("imports", 0),
            "rows": c.get("import_rows", 0),
            "recreated": c.get("import_recreated", 0),
            # imports that ended in a status of no known meaning: their rows went person by person
            "unreadable": c.get("import_unreadable", 0),
        },
        "seams": {
            "deletes": c.get("seam_shift", 0),
            "windows": c.get("seam_windows", 0),
            "persons_checked": c.get("seam_persons", 0),
        },
        # records Efficy's export listed out of K_CONTACT order (plan.in_key_order): completeness not proven
        "efficy_unordered_records": c.get("export_unordered", 0),
        # persons Efficy's export listed twice with different values (plan.one_record_each): left as they are
        "efficy_conflicting_records": c.get("export_conflicting", 0),
        "breaker": verdict_of(c),
    }


#: runs that end while pages are still running: those pages add what they did to the run after its report
STOPPED_STATUSES = ("cancelled", "timed_out")


def current_report(run: Any) -> dict[str, Any]:
    """The run's report as it should be read now. A run ends with a report of its counters at that moment; a
    cancelled or timed-out run's pages that were syncing go on to the end of their chunk and add their counts
    afterwards (lifecycle.page), so such a report is rebuilt from the counters, keeping what only the end knew
    (failed pages, query tags, requeued, end time): every person a page wrote is counted."""
    report = run.report
    if report is None:
        return build_report(run, status=run.status)
    if report.get("status") not in STOPPED_STATUSES:
        return _resent_since(dict(report), run)
    rebuilt = build_report(
        run,
        status=str(report["status"]),
        failed_pages=report.get("pages"),
        query_tags=report.get("query_tags"),
        requeued=int((report.get("deferred") or {}).get("requeued", 0)),
        ended_at=report.get("ended_at"),
    )
    return _resent_since({**rebuilt, "deferred": {**(report.get("deferred") or {}), **rebuilt["deferred"]}}, run)


def left_parked(deferred: dict[str, Any], left: int, error: str) -> None:
    """Note in a report's `deferred` the persons left parked at the end because their re-enqueue failed (an SQS
    outage): the run ends all the same, and the sweeper re-sends them (fullsync/ending.py)."""
    deferred["left_parked"] = left
    deferred["requeue_error"] = error
    deferred["note"] = (
        f"{plural(left, 'person')} left parked: the re-enqueue at the end failed ({error}); "
        "the sweeper re-sends them within 5 minutes"
        if left
        else "re-sent by the sweeper after the re-enqueue at the end failed"
    )


def _resent_since(report: dict[str, Any], run: Any) -> dict[str, Any]:
    """A report that left persons parked, with what the sweeper has re-sent since (it adds to the run's
    `requeued` counter): the report was written before they went."""
    deferred = report.get("deferred") or {}
    if not deferred.get("left_parked"):
        return report
    reported, now = int(deferred.get("requeued", 0)), int(run.counters.get("requeued", 0))
    if now <= reported:
        return report
    updated = {**deferred, "requeued": now}
    left_parked(updated, max(0, int(deferred["left_parked"]) - (now - reported)), str(deferred.get("requeue_error")))
    return {**report, "deferred": updated}


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        a = datetime.fromisoformat(start.replace("Z", "+00:00"))
        b = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round((b - a).total_seconds(), 1)


def render_report(report: Mapping[str, Any]) -> list[str]:
    """The report as the CLI and the demo print it."""
    dry = bool(report.get("dry_run"))
    would = "would be " if dry else ""
    persons = report.get("persons", {})
    pages = report.get("pages", {})
    title = "Dry run" if dry else "Full sync"
    took = f" in {_duration(report['duration_s'])}" if report.get("duration_s") is not None else ""
    stopped = report.get("status") in ("cancelled", "timed_out")
    not_done = "not done" if stopped else "failed"
    failed_count = int(pages.get("failed_count", len(pages.get("failed") or [])))
    failed_pages = f", {failed_count} {not_done}" if failed_count else ""
    if stopped:  # its pages go on counting after the end (current_report): what is left is what is not done
        left = max(0, int(pages.get("total", 0)) - int(pages.get("done", 0)))
        failed_pages = f", {left} {not_done}" if left else ""
    lines = [
        f"{title} of {report.get('integration_id')} (run {report.get('run_id')}): "
        f"{str(report.get('status', '?')).upper()}{took}",
        *_origin(report),
        *breaker_lines(report),
        f"  pages: {pages.get('done', 0)}/{pages.get('total', 0)} done{failed_pages}",
        f"  persons: {persons.get('persons', 0):,} read",
    ]
    rows: list[tuple[str, int]] = [
        (would + "created", persons.get("created", 0)),
        (would + "updated", persons.get("updated", 0)),
        ("unchanged", persons.get("unchanged", 0)),
        ("skipped", persons.get("skipped", 0)),
    ]
    rows += [(f"  {label}", n) for label, n in report.get("skipped_by_condition", {}).items()]
    if persons.get("deleted"):
        rows.append((would + "deleted", persons["deleted"]))
    rows.append(("failed", persons.get("failed", 0)))
    if persons.get("stale"):
        rows.append(("kept newer data", persons["stale"]))
    width = max(len(label) for label, _ in rows) + 2
    lines += [f"    {label:<{width}}{n:>9,}" for label, n in rows]
    shown = 0
    for failed in pages.get("failed", [])[:10]:
        if stopped and not failed.get("attempts"):
            continue  # never started before the stop: not worth a line each
        shown += 1
        lines.append(
            f"  page {failed['page']} {not_done} after {failed.get('attempts', 0)} attempt(s): {failed.get('error')}"
        )
    lines += _more_pages(pages, shown, not_done, stopped)
    lines += _table("consents" + (" that would be" if dry else ""), ("gained", "lost"), report.get("consents", {}))
    lines += _table("tags" + (" that would be" if dry else ""), ("added", "removed"), report.get("tags", {}))
    for tag, error in (report.get("query_tags") or {}).get("errors", {}).items():
        lines.append(f"  query tag {tag} left as it was: {error}")
    deferred = report.get("deferred", {})
    lines.append(
        f"  real-time changes deferred during the sync: {plural(deferred.get('messages', 0), 'message')}, "
        f"{plural(deferred.get('requeued', 0), 'person')} re-enqueued at the end"
    )
    if deferred.get("left_parked"):
        lines.append(f"  {deferred.get('note')}")
    seams = report.get("seams") or {}
    if seams.get("deletes"):
        windows = seams.get("windows", 0)
        lines.append(
            f"  page boundaries re-read after {plural(seams['deletes'], 'delete')} in Efficy during the sync: "
            f"{windows:,} {'boundary' if windows == 1 else 'boundaries'}, "
            f"{plural(seams.get('persons_checked', 0), 'person')} checked"
        )
    if report.get("efficy_unordered_records"):
        lines.append(
            f"  warning: Efficy's export listed {plural(report['efficy_unordered_records'], 'record')} out of "
            "K_CONTACT order: a person a change or delete moved during the sync may be in no page (Seams counts "
            "deletes by that order); a full sync while nobody changes the CRM reads everyone"
        )
    if report.get("efficy_conflicting_records"):
        lines.append(
            f"  warning: Efficy's export listed {plural(report['efficy_conflicting_records'], 'person')} more than "
            "once with different values: left as they are in APSIS One (check the connector's export)"
        )
    imports = report.get("imports", {})
    if imports.get("files"):
        # a page with few changed persons writes them one by one: say so, or the rows look like lost persons
        written = persons.get("created", 0) + persons.get("updated", 0)
        rest = written - imports["rows"]
        one_by_one = f"; the other {rest:,} written person by person (pages with few changes)" if rest > 0 else ""
        lines.append(f"  bulk imports: {imports['files']} file(s), {imports['rows']:,} rows{one_by_one}")
        if imports.get("recreated"):
            lines.append(
                f"  {plural(imports['recreated'], 'profile')} the states said exist were created by the imports "
                "(deleted in APSIS One): they hold only what changed; `efficy-sync reconcile ID --fix` fills them"
            )
        if imports.get("unreadable"):
            lines.append(
                f"  warning: {plural(imports['unreadable'], 'import')} ended in a status of no known meaning: "
                "their rows were written person by person (README: what the simulators assume)"
            )
    if report.get("error"):
        lines.append(f"  error: {report['error'].get('Error')}: {report['error'].get('Cause')}")
    if dry:
        lines.append("  Dry run: nothing was written to APSIS One or to the sync state.")
    return lines


def _more_pages(pages: Mapping[str, Any], shown: int, not_done: str, stopped: bool) -> list[str]:
    """The pages not done beyond the lines printed: counted by error, and those with no attempt as ranges
    (a report keeps only the first few pages: failed_pages.py)."""
    if stopped or int(pages.get("failed_count", 0)) <= shown:
        return []  # a stopped run's pages not done are counted on the pages line
    by_error = pages.get("failed_by_error") or {}
    lines = [f"  {not_done} pages by error: " + ", ".join(f"{name} {n:,}" for name, n in by_error.items())]
    unreported = pages.get("unreported") or {}
    if unreported.get("count"):
        ranges = list(unreported.get("ranges") or [])
        more = ", ..." if len(ranges) >= RANGES else ""
        lines.append(f"  {plural(int(unreported['count']), 'page')} without a result: {', '.join(ranges)}{more}")
    return lines


def confirm_count(report: Mapping[str, Any]) -> int:
    """The N of `full-sync start ID --allow-removals-up-to N` that confirms a halted (or would-halt) run's counts:
    its largest line over the limit or of a kind it was confirmed for (breaker.confirmation carries those at
    the smaller of N and their count: named from the over lines alone, a run halting on a second kind named an
    N that carried the first below its count, and halted again), or its largest line if none is over."""
    breaker = report.get("breaker") or {}
    rows, carried = breaker.get("removals") or {}, breaker.get("confirmed") or {}
    over = [int(row["removals"]) for row in rows.values() if row.get("over")]
    if over and not (report.get("status") == "succeeded" and not report.get("dry_run")):  # a sent run carries none
        over += [int(row["removals"]) for name, row in rows.items() if name in carried]
    return max(over or [int(row["removals"]) for row in rows.values()], default=0)


def breaker_lines(report: Mapping[str, Any]) -> list[str]:
    """Removals first (issue 15): what the run removes (or would) per subscription, tag and profile deletes,
    against the blast-radius breaker's threshold, and what the breaker decided."""
    breaker = report.get("breaker")
    if not breaker:
        return []
    dry = bool(report.get("dry_run"))
    rows = breaker.get("removals") or {}
    head = (
        f"  removals{' that would be made' if dry else ''} (breaker: more than "
        f"{breaker.get('max_removal_percent', 0):g} % of the holders and at least {breaker.get('min_removals', 0)} halts)"
    )
    if not rows:
        return [f"{head}: none"]
    width = max(len(describe(name)) for name in rows) + 2
    lines = [head, f"    {'':<{width}}{'removals':>9}{'holders':>9}{'limit':>9}"]
    for name, row in rows.items():
        over = "  OVER" if row.get("over") else ""
        lines.append(f"    {describe(name):<{width}}{row['removals']:>9,}{row['base']:>9,}{row['limit']:>9,}{over}")
    confirmed = int(breaker.get("confirmed_up_to") or 0)
    largest, fewer = confirm_count(report), _fewer(breaker, confirmed)
    if breaker.get("halted"):
        again = f" (more than the {confirmed:,} confirmed{fewer})" if confirmed else ""
        lines.append(
            f"  HALTED by the blast-radius breaker{again}: nothing was removed (additions and updates were sent). "
            f"Check the counts; to send them: efficy-sync full-sync start {report.get('integration_id')} "
            f"--allow-removals-up-to {largest} (a run that finds more halts again; --allow-removals: any number)"
        )
    elif dry:
        # a dry run started with a confirmed count was judged with it: the real run would need it too
        judged = f" started with --allow-removals-up-to {confirmed}{fewer}" if confirmed else ""
        verdict = "WOULD HALT" if breaker.get("would_halt") else "would not halt"
        extra = f" (unless started with --allow-removals-up-to {largest})" if breaker.get("would_halt") else ""
        lines.append(f"  breaker: the real run{judged} {verdict}{extra}")
    elif breaker.get("would_halt") and breaker.get("allowed"):
        lines.append("  breaker: beyond the threshold, sent as confirmed by --allow-removals")
    elif confirmed:
        lines.append(
            f"  breaker: up to {confirmed:,} removals of each kind held before confirmed by --allow-removals-up-to{fewer}"
        )
    return lines


def _fewer(breaker: Mapping[str, Any], up_to: int) -> str:
    """The kinds a count N confirmed for less than N (the run it confirmed showed fewer: breaker.confirmation),
    named so the admin sees what each kind may remove, not N for every one: "" when none."""
    below = {name: int(n) for name, n in (breaker.get("confirmed") or {}).items() if 0 < int(n) < up_to}
    if not below:
        return ""
    kinds = ", ".join(f"{describe(name)} up to {n:,}" for name, n in sorted(below.items()))
    return f"; {kinds}: the count{'s' if len(below) > 1 else ''} the confirmed run showed"


def _origin(report: Mapping[str, Any]) -> list[str]:
    """Who started the run, with which config version and write mode (reports written before these were kept
    have none)."""
    parts = []
    if report.get("started_by"):
        via = " with efficy-sync" if report.get("started_via") == "cli" else " on Step Functions"
        parts.append(f"started by {report['started_by']}{via if report.get('started_via') else ''}")
    if report.get("started_at"):
        parts.append(f"at {report['started_at']}")
    if report.get("config_version"):
        parts.append(f"config version {report['config_version']}")
    if report.get("write_mode"):
        parts.append(f"in {report['write_mode']} mode")
    return [f"  {' '.join(parts)}"] if parts else []


def _table(title: str, columns: tuple[str, str], rows: Mapping[str, Mapping[str, int]]) -> list[str]:
    if not rows:
        return []
    width = max(len(title) - 2, *(len(name) for name in rows)) + 2
    lines = [f"  {title:<{width + 2}}{columns[0]:>9}{columns[1]:>9}"]
    for name, counts in rows.items():
        lines.append(f"    {name:<{width}}{counts.get(columns[0], 0):>9,}{counts.get(columns[1], 0):>9,}")
    return lines


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
