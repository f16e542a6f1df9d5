"""`efficy-sync full-sync start|status|cancel|list|report ID`: run a full sync of one integration, watch it, and
look back at past runs.

`start` refuses when a full sync of the integration already runs (the state machine's Begin refuses too, so
two admins racing cannot both start one). `status` shows the newest run: a progress bar of pages, persons
synced / skipped / failed, the real-time changes waiting for the end, and an ETA; `--follow` redraws until
the run ends and then prints its report. `cancel` stops the execution; the clean-up re-enqueues the parked
changes, and real-time sync of the integration goes on at once. `list` shows the run history (newest first:
who started each run, when, its outcome and counts, the config version), and `report RUN` re-prints the
report of one of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from efficy_sync_tools.commands._args import non_negative_float, positive_int
from efficy_sync_tools.commands._aws import EXIT_REFUSED, CliError, cli_command
from efficy_sync_tools.commands._removals import confirm_for, exit_for, held_document, held_lines

REFUSED = EXIT_REFUSED  # a refused start (another full sync of the integration runs); not 2, argparse's usage error
BAR_WIDTH = 28


def _removal_count(text: str) -> int:
    """--allow-removals-up-to's N: a whole number of removals, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a count of removals (1 or more), not {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    full = sub.add_parser("full-sync", help="full syncs: start, watch, cancel")
    actions = full.add_subparsers(dest="full_sync_command", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start a full sync of an integration (refused if one runs)")
    start.add_argument("integration_id", metavar="ID")
    start.add_argument("--dry-run", action="store_true", help="compute and report the changes, write nothing")
    start.add_argument("--follow", action="store_true", help="show progress until it ends, then the report")
    confirm = start.add_mutually_exclusive_group()
    confirm.add_argument(
        "--allow-removals",
        action="store_true",
        help="send removals beyond the blast-radius breaker's threshold, any number of them",
    )
    confirm.add_argument(
        "--allow-removals-up-to",
        type=_removal_count,
        metavar="N",
        help="send up to N removals of each kind the last (halted or dry) run was over on (its report names N); "
        "more halts again",
    )
    start.add_argument(
        "--write-mode",
        choices=("diff", "import"),
        help="this run only, instead of the config's full_sync.write_mode (import: a big first load)",
    )
    start.set_defaults(func=start_command)
    status = actions.add_parser("status", help="progress of the newest full sync (or --run RUN_ID)")
    status.add_argument("integration_id", metavar="ID")
    status.add_argument("--run", help="a given run (run id or execution name) instead of the newest")
    status.add_argument("--follow", action="store_true", help="redraw until the run ends, then print the report")
    status.add_argument("--format", choices=("text", "json"), default="text")
    status.set_defaults(func=status_command)
    cancel = actions.add_parser("cancel", help="stop the running full sync; parked real-time changes resume")
    cancel.add_argument("integration_id", metavar="ID")
    cancel.add_argument(
        "--wait", type=non_negative_float, default=30.0, help="seconds to wait for the run to end (default 30)"
    )
    cancel.set_defaults(func=cancel_command)
    listing = actions.add_parser("list", help="past and current full syncs of an integration, newest first")
    listing.add_argument("integration_id", metavar="ID")
    listing.add_argument("--limit", type=positive_int, default=20, help="show at most this many runs (default 20)")
    listing.set_defaults(func=list_command)
    report = actions.add_parser("report", help="re-print the report of one run (run ids: `full-sync list ID`)")
    report.add_argument("integration_id", metavar="ID")
    report.add_argument("run_id", metavar="RUN")
    report.set_defaults(func=report_command)
    for parser in (start, status):
        parser.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)


# ---- plumbing ---------------------------------------------------------------------------------------------
def _setup() -> Any:
    """The library's environment (tables, queue, state machine) from the env or the stack; returns settings."""
    from efficy_sync.settings import settings

    from efficy_sync_tools.commands._aws import setup_library_env

    setup_library_env()
    return settings()


def _runs() -> Any:
    from efficy_sync.fullsync.runs import RunStore

    return RunStore(_setup().state_table)


def _check_integration(integration_id: str) -> None:
    from efficy_sync.store.configs import ConfigStore, UnknownIntegration

    store = ConfigStore(_setup().config_table)
    try:
        store.get(integration_id)
    except UnknownIntegration:
        known = store.list_ids()
        hint = f"; known: {', '.join(known)}" if known else "; none is configured yet (use `config apply FILE`)"
        raise CliError(f"unknown integration {integration_id!r}{hint}") from None


def _sfn() -> Any:
    from efficy_sync.aws import client

    return client("stepfunctions")


def _execution_status(arn: str) -> dict[str, Any] | None:
    sfn = _sfn()
    try:
        return sfn.describe_execution(executionArn=arn)
    except sfn.exceptions.ExecutionDoesNotExist:
        return None


def _short(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def _refusal(integration_id: str, lock: Any) -> str:
    return (
        f"a full sync of {integration_id} is already running (run {lock.run_id}, started {lock.started_at}, "
        f"execution {_short(lock.execution_arn)}).\n"
        f"  Watch it:  efficy-sync full-sync status {integration_id} --follow\n"
        f"  Stop it:   efficy-sync full-sync cancel {integration_id}"
    )


# ---- start ------------------------------------------------------------------------------------------------
@cli_command
def start_command(args: argparse.Namespace) -> int:
    from efficy_sync.store.run_records import execution_ended

    s = _setup()
    integration_id = args.integration_id
    _check_integration(integration_id)
    runs = _runs()
    lock = runs.lock(integration_id)
    if lock is not None and lock.held:
        described = _execution_status(lock.execution_arn)
        if described is not None and not execution_ended(described["status"]):  # running, or pending a redrive
            raise CliError(_refusal(integration_id, lock), REFUSED)
        # the holder ended without cleaning up: Begin takes the lock over after ending that run
    if not s.state_machine_arn:
        raise CliError("cannot find the full-sync state machine: set STATE_MACHINE_ARN or EFFICY_SYNC_STACK")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{integration_id[:48]}-{stamp}-{secrets.token_hex(3)}"
    payload = {"integration_id": integration_id, "dry_run": bool(args.dry_run), "started_by": caller_identity()}
    if args.allow_removals:
        payload["allow_removals"] = True
    if args.allow_removals_up_to:
        payload["allow_removals_up_to"] = args.allow_removals_up_to
    if args.write_mode:
        payload["write_mode"] = args.write_mode
    arn = _sfn().start_execution(stateMachineArn=s.state_machine_arn, name=name, input=json.dumps(payload))[
        "executionArn"
    ]
    kind = ("dry run" if args.dry_run else "full sync") + (f" in {args.write_mode} mode" if args.write_mode else "")
    if args.output == "json":
        # the run id is what `status --run` and `report` take: wait for Begin to make it (seconds; a refusal by
        # Begin is exit 3 here, not a 0 a script would only find out about later)
        run = _wait_for_run(runs, integration_id, arn)
        if not args.follow:
            document = {"integration_id": integration_id, "run_id": run.run_id, "execution_name": name}
            print(json.dumps({**document, "execution_arn": arn, "dry_run": bool(args.dry_run)}, indent=2))
            return 0
        return _follow_json(runs, run, args.interval)
    print(f"Started a {kind} of {integration_id} (execution {name}).", flush=True)
    if not args.follow:
        print(f"  Watch it: efficy-sync full-sync status {integration_id} --follow")
        return 0
    run = _wait_for_run(runs, integration_id, arn)
    return _follow(runs, run, args.interval)


def caller_identity() -> str:
    """Who starts the run, for the run history: the caller's AWS identity (STS GetCallerIdentity, the ARN of the
    user or assumed role), else $EFFICY_SYNC_USER or the login name when STS cannot say."""
    from botocore.exceptions import BotoCoreError, ClientError
    from efficy_sync.aws import client

    try:
        return str(client("sts").get_caller_identity()["Arn"])
    except (BotoCoreError, ClientError):
        return os.environ.get("EFFICY_SYNC_USER") or os.environ.get("USER") or "unknown"


def _wait_for_run(runs: Any, integration_id: str, arn: str, timeout: float = 120.0) -> Any:
    """The run Begin created for this execution; CliError when the execution ended without one (refused)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lock = runs.lock(integration_id)
        if lock is not None and lock.execution_arn == arn:
            run = runs.get(integration_id, lock.run_id)
            if run is not None:
                return run
        described = _execution_status(arn)
        if described is not None and described["status"] != "RUNNING":
            if described.get("error") == "SyncAlreadyRunning":
                raise CliError(f"refused: {described.get('cause', '')}", REFUSED)
            raise CliError(
                f"the execution ended {described['status']} before the run began: "
                f"{described.get('error', '')} {described.get('cause', '')}".strip()
            )
        time.sleep(0.3)
    raise CliError(f"the run did not begin within {timeout:.0f}s (execution {_short(arn)})")


# ---- status -----------------------------------------------------------------------------------------------
@cli_command
def status_command(args: argparse.Namespace) -> int:
    _check_integration(args.integration_id)
    runs = _runs()
    # a run asked for by name that does not exist is an error (stderr), as in report; `--run ""` too, not the newest
    run = _named_run(runs, args.integration_id, args.run) if args.run is not None else runs.latest(args.integration_id)
    if run is None:  # no full sync ever: an answer, not an error
        if args.format == "json":
            print(json.dumps({"integration_id": args.integration_id, "run_id": None, "status": None}, indent=2))
        else:
            print(f"No full sync of {args.integration_id} found.")
        return 0
    if args.format == "json":
        if args.follow:  # one document once the run has ended, as `start --follow --output json` prints
            return _follow_json(runs, run, args.interval)
        print(json.dumps(_status_document(run), indent=2, default=str))
        return exit_for(run.status)
    if args.follow and run.active:
        return _follow(runs, run, args.interval)
    for line in progress_lines(run, _parked(args.integration_id) if run.active else 0):
        print(line)
    if not run.active:
        _print_report(run)
    confirm = _confirm_count(runs, args.integration_id) if not args.run and not run.active else 0
    for line in held_lines(_setup().state_table, args.integration_id, confirm):
        print(line)
    return exit_for(run.status)


def _named_run(runs: Any, integration_id: str, name: str) -> Any:
    """The run `name` names: its run id, or the execution's name or ARN (what `start`, its refusal and the Step
    Functions console show). CliError naming where the run ids are when none of the integration's runs is it."""
    run = runs.get(integration_id, name) if name else None
    if run is None and name:  # not a run id: an execution's name or ARN, looked up in the (bounded) history
        run = next(
            (r for r in runs.history(integration_id) if name in (r.execution_arn, _short(r.execution_arn))), None
        )
    if run is None:
        raise CliError(
            f"no run {name!r} of {integration_id}: give a run id from `efficy-sync full-sync list {integration_id}` "
            "(or the execution name `full-sync start` printed)"
        )
    return run


def _status_document(run: Any) -> dict[str, Any]:
    return {
        "integration_id": run.integration_id,
        "run_id": run.run_id,
        "status": run.status,
        "dry_run": run.dry_run,
        "started_by": run.started_by,
        "started_via": run.started_via,
        "config_version": run.config_version,
        "write_mode": run.write_mode,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "pages_total": run.pages_total,
        "persons_estimate": run.persons_estimate,
        "waiting_on": run.waiting_on if run.active and not run.pages_total else None,
        "counters": run.counters,
        "deferred_persons": _parked(run.integration_id) if run.active else 0,
        "error": run.error,
        "report": _current_report(run) if run.report else None,
        **held_document(_setup().state_table, run.integration_id),
    }


def _confirm_count(runs: Any, integration_id: str) -> int:
    """The N of `--allow-removals-up-to N` Begin would accept now: from the run it confirms (confirm_for), which
    may be older than the newest (one cancelled or failed before its gate is looked past)."""
    from efficy_sync.fullsync.breaker import CONFIRMATION_HISTORY

    return confirm_for(runs.history(integration_id, CONFIRMATION_HISTORY))


def _current_report(run: Any) -> dict[str, Any]:
    from efficy_sync.fullsync.report import current_report

    return current_report(run)


def _parked(integration_id: str) -> int:
    from efficy_sync.fullsync.parking import ParkingLot

    return ParkingLot(_setup().state_table).count(integration_id)


def _pauses(interval: float, first: float = 0.2) -> Iterator[float]:
    """Waits between two reads of a run: short at first, so a run of a few pages ends the command as soon as
    it ends, then growing to `interval`, so a long run costs a read a second and no more."""
    pause = min(first, interval)
    while True:
        yield pause
        pause = min(interval, pause * 1.5)


def _follow_json(runs: Any, run: Any, interval: float) -> int:
    """Waits for the run to end, then prints its status document; exits with the run's code."""
    pauses = _pauses(interval)
    while (current := runs.get(run.integration_id, run.run_id) or run).active:
        time.sleep(next(pauses))
    print(json.dumps(_status_document(current), indent=2, default=str))
    return exit_for(current.status)


def _follow(runs: Any, run: Any, interval: float) -> int:
    """Redraws in place on a terminal; elsewhere (logs, CI) prints a line whenever the progress changes."""
    tty = sys.stdout.isatty()
    drawn = 0
    last: tuple[Any, ...] = ()
    pauses = _pauses(interval)
    try:
        while True:
            current = runs.get(run.integration_id, run.run_id) or run
            lines = progress_lines(current, _parked(run.integration_id) if current.active else 0)
            if tty:
                if drawn:
                    sys.stdout.write(f"\x1b[{drawn}F\x1b[J")
                sys.stdout.write("\n".join(lines) + "\n")
                sys.stdout.flush()
                drawn = len(lines)
            else:
                c = current.counters
                seen = (
                    current.status,
                    current.pages_total,
                    c.get("pages_done"),
                    c.get("persons"),
                    c.get("parked_messages"),
                )
                if seen != last:  # a log gets a line per change of progress, not per tick of the ETA
                    print(lines[1] + "  " + lines[2].strip() + "  " + lines[3].strip(), flush=True)
                    last = seen
            if not current.active:
                break
            time.sleep(next(pauses))
    except KeyboardInterrupt:
        print(f"\nStopped watching; the sync goes on (efficy-sync full-sync status {run.integration_id} --follow).")
        return 130
    print()
    _print_report(current)
    return exit_for(current.status)


def _print_report(run: Any) -> None:
    from efficy_sync.fullsync.report import current_report, render_report

    report = current_report(run)
    for line in render_report(report):
        print(line)
    if run.error and not report.get("error"):
        print(f"  error: {run.error.get('Error')}: {run.error.get('Cause')}")


def progress_lines(run: Any, deferred_persons: int, now: datetime | None = None) -> list[str]:
    """Four lines: the run, the bar with ETA, the persons, the deferred real-time changes."""
    from efficy_sync.fullsync.report import plural

    c = run.counters
    total = run.pages_total or 0
    done = c.get("pages_done", 0)
    fraction = min(1.0, done / total) if total else 0.0
    filled = round(fraction * BAR_WIDTH)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    now = now or datetime.now(UTC)
    elapsed = _seconds_since(run.started_at, run.ended_at, now)
    synced = c.get("created", 0) + c.get("updated", 0) + c.get("unchanged", 0)
    read = c.get("persons", 0)
    eta = _eta(run, read, now)
    kind = "dry run" if run.dry_run else "full sync"
    # a dry run writes nothing: its counters are what a real run would do
    verbs = {"synced": "would sync", "created": "would create", "updated": "would update"} if run.dry_run else {}
    verbs = {"synced": "synced", "created": "created", "updated": "updated", **verbs}
    pages = f"{done}/{total} pages" if total else "planning..."
    estimate = f" of ~{run.persons_estimate:,}" if run.persons_estimate else ""
    tail = ""
    if run.active and not total and run.waiting_on:  # the Plan step's retries wait out an outage
        since = (run.waiting_since or "")[11:19]
        tries = plural(c.get("plan_retries", 0), "failed attempt")
        tail = f"  waiting: {run.waiting_on} since {since} UTC ({tries}; the step is retried)"
    elif run.active and total and done >= total and c.get("import_files"):
        files = f"{c.get('import_files_done', 0):,}/{c['import_files']:,}"
        tail = f"  every page done; importing: {files} files ({c.get('import_rows', 0):,} rows sent)"
        if (eta := _import_eta(c)) is not None:
            tail += f"  ETA {_clock(eta)}"
    elif run.active and total and done >= total:
        tail = "  every page done; finishing (page boundaries, query tags, report)"
    elif run.active and eta is not None:
        tail = f"  ETA {_clock(eta)}"
    return [
        f"{kind} of {run.integration_id}  run {run.run_id}  {run.status.upper()}  elapsed {_clock(elapsed)}",
        f"[{bar}] {pages} {fraction:>4.0%}" + tail,
        f"  persons: {synced:,} {verbs['synced']} ({c.get('created', 0):,} {verbs['created']}, "
        f"{c.get('updated', 0):,} {verbs['updated']}, {c.get('unchanged', 0):,} unchanged) · "
        f"{c.get('skipped', 0):,} skipped · {c.get('failed', 0):,} failed · {read:,} read{estimate}",
        f"  deferred real-time changes: {plural(c.get('parked_messages', 0), 'message')}"
        + (
            f" ({plural(deferred_persons, 'person')} waiting)"
            if run.active
            else f", re-enqueued {c.get('requeued', 0):,}"
        ),
    ]


def _seconds_since(start: str | None, end: str | None, now: datetime) -> float:
    try:
        began = datetime.fromisoformat((start or "").replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    until = now
    if end:
        with contextlib.suppress(ValueError):
            until = datetime.fromisoformat(end.replace("Z", "+00:00"))
    return max(0.0, (until - began).total_seconds())


def _eta(run: Any, read: int, now: datetime) -> float | None:
    """Seconds left: the persons still to read at the rate one page worker reads them, times the workers that
    can still run (pages report when done, so early on there is no ETA).

    The rate of the whole run would promise too much at the end: `max_concurrency` pages run at once while
    there are that many left, but the last pages run alone, each at one worker's pace."""
    if not run.persons_estimate or not read or not run.planned_at:
        return None
    spent = _seconds_since(run.planned_at, None, now)
    if spent <= 0:
        return None
    total = run.pages_total or 0
    workers = max(1, min(run.max_concurrency or 1, total or 1))
    per_worker = read / spent / workers
    pages_left = max(1, total - run.counters.get("pages_done", 0)) if total else workers
    remaining = max(0, run.persons_estimate - read)
    return remaining / (per_worker * min(workers, pages_left))


def _import_eta(c: Mapping[str, int]) -> float | None:
    """Seconds left importing: the files not done at the mean time one file took, FILES_IN_FLIGHT at a time.
    APSIS One does not document how long it processes an import, so until a file is done there is no ETA;
    the mean includes its rate limit's waits (10 imports a minute), as the files still to send will."""
    from efficy_sync.fullsync.collect import FILES_IN_FLIGHT

    done, total, spent_ms = c.get("import_files_done", 0), c.get("import_files", 0), c.get("import_file_ms", 0)
    left = total - done
    if not done or not spent_ms or left <= 0:  # the last file done: the query tags and the report are left
        return None
    return left * spent_ms / done / 1000 / max(1, min(FILES_IN_FLIGHT, left))


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


# ---- list and report ---------------------------------------------------------------------------------------
def _history_row(run: Any) -> dict[str, Any]:
    c = run.counters
    return {
        "run_id": run.run_id,
        "status": run.status,
        "dry_run": run.dry_run,
        "started_by": run.started_by,
        "started_via": run.started_via,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "config_version": run.config_version,
        "write_mode": run.write_mode,
        "counts": {
            name: c.get(name, 0) for name in ("persons", "created", "updated", "unchanged", "skipped", "failed")
        },
        "pages": {"total": run.pages_total or 0, "done": c.get("pages_done", 0)},
        "error": run.error,
    }


@cli_command
def list_command(args: argparse.Namespace) -> int:
    """The run history, newest first; a run still going shows RUNNING."""
    _check_integration(args.integration_id)
    if args.limit < 1:
        raise CliError("--limit must be at least 1")
    rows = [_history_row(run) for run in _runs().history(args.integration_id, limit=args.limit)]
    if args.output == "json":
        print(json.dumps({"integration_id": args.integration_id, "runs": rows}, indent=2, default=str))
        return 0
    if not rows:
        print(
            f"No full sync of {args.integration_id} recorded yet (efficy-sync full-sync start {args.integration_id})."
        )
        return 0
    header = ("RUN", "OUTCOME", "STARTED", "TOOK", "CONFIG", "READ", "CREATED", "UPDATED", "FAILED", "STARTED BY")
    table = []
    for r in rows:
        took = _seconds_since(r["started_at"], r["ended_at"], datetime.now(UTC)) if r["ended_at"] else None
        counts = r["counts"]
        table.append(
            (
                r["run_id"],
                r["status"].upper() + (" (dry run)" if r["dry_run"] else ""),
                r["started_at"],
                _clock(took) if took is not None else "-",
                f"v{r['config_version']}" if r["config_version"] else "-",
                f"{counts['persons']:,}",
                f"{counts['created']:,}",
                f"{counts['updated']:,}",
                f"{counts['failed']:,}",
                _who(r),
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    for row in (header, *table):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"(newest first; efficy-sync full-sync report {args.integration_id} RUN re-prints one)")
    return 0


def _who(row: dict[str, Any]) -> str:
    if row["started_via"] == "stepfunctions":
        return f"stepfunctions ({row['started_by']})"
    return row["started_by"] or "-"


@cli_command
def report_command(args: argparse.Namespace) -> int:
    """Re-prints a run's report as `status` printed it when the run ended (or its progress, if it still runs)."""
    from efficy_sync.fullsync.report import current_report

    _check_integration(args.integration_id)
    run = _named_run(_runs(), args.integration_id, args.run_id)
    if args.output == "json":
        document = _history_row(run)
        document["report"] = current_report(run)
        print(json.dumps({"integration_id": args.integration_id, **document}, indent=2, default=str))
    elif run.active:
        for line in progress_lines(run, _parked(run.integration_id)):
            print(line)
    else:
        _print_report(run)
    return exit_for(run.status)


# ---- cancel -----------------------------------------------------------------------------------------------
def _stop(arn: str) -> tuple[bool, str]:
    """Stops an execution that can still act: RUNNING, PENDING_REDRIVE (an admin's redrive resumes it: ending
    only its run released the lock while it went on, and called the cancelled run failed) or a status this
    code does not know. (stopped, the execution status the run ends with). A stop Step Functions refuses
    leaves the run as it is: ended while its execution may still run, a second full sync could start."""
    from botocore.exceptions import ClientError
    from efficy_sync.store.run_records import execution_ended

    described = _execution_status(arn)
    if described is None or execution_ended(described["status"]):
        return False, described["status"] if described is not None else "ABORTED"
    try:
        _sfn().stop_execution(
            executionArn=arn,
            error="Cancelled",
            cause=f"cancelled by {caller_identity()} with efficy-sync full-sync cancel",
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "an error")
        if code == "ExecutionDoesNotExist":  # gone since it was described: nothing left to stop
            return False, "ABORTED"
        raise CliError(
            f"Step Functions refused to stop execution {_short(arn)} ({described['status']}: {code}); the run goes on. "
            "Try again in a moment."
        ) from None
    after = _execution_status(arn)
    # moto's interpreter reports ABORTED between states, AWS at once: a stopped execution ends its run as cancelled
    return True, after["status"] if after is not None and execution_ended(after["status"]) else "ABORTED"


@cli_command
def cancel_command(args: argparse.Namespace) -> int:
    """Stops the execution and ends the run here and now (the same idempotent clean-up EventBridge and the
    sweeper run later find done), so that `status` says CANCELLED as soon as this returns."""
    from efficy_sync.fullsync.report import plural
    from efficy_sync.fullsync.wiring import build_full_sync

    integration_id = args.integration_id
    _check_integration(integration_id)
    runs = _runs()
    lock = runs.lock(integration_id)
    if lock is None or not lock.held:
        if args.output == "json":
            print(json.dumps({"integration_id": integration_id, "cancelled": False, "reason": "not running"}))
        else:
            print(
                f"No full sync of {integration_id} is running: nothing to cancel "
                f"(its last run: efficy-sync full-sync status {integration_id})."
            )
        return 1
    stopped, status = _stop(lock.execution_arn)
    build_full_sync().execution_ended(lock.execution_arn, status)
    deadline = time.monotonic() + max(0.0, args.wait)
    run = runs.get(integration_id, lock.run_id)
    while run is not None and run.active and time.monotonic() < deadline:
        time.sleep(0.3)
        run = runs.get(integration_id, lock.run_id)
    in_flight = 0
    if run is not None and run.pages_total:
        in_flight = max(0, min(run.max_concurrency or 0, run.pages_total - len(run.pages_counted)))
    document = {
        "integration_id": integration_id,
        "run_id": lock.run_id,
        "execution": _short(lock.execution_arn),
        "cancelled": bool(run is not None and not run.active),
        "status": run.status if run is not None else None,
        "execution_stopped": stopped,
        "requeued": run.counters.get("requeued", 0) if run is not None else 0,
        "pages_winding_down": in_flight,
    }
    if args.output == "json":
        print(json.dumps(document, indent=2))
        return 0 if document["cancelled"] else 1
    if stopped:
        print(f"Stopped execution {document['execution']} (run {lock.run_id}).", flush=True)
    if run is None or run.active:
        print(
            f"The run is still marked running after {args.wait:.0f}s; the sweeper ends it within 5 minutes "
            f"(efficy-sync full-sync status {integration_id})."
        )
        return 1
    print(
        f"Full sync of {integration_id} {run.status} (run {run.run_id}): "
        f"{plural(document['requeued'], 'deferred real-time change')} re-enqueued; real-time sync is running again."
    )
    if in_flight:
        print(
            f"  Still winding down: up to {in_flight} page worker(s) finish the persons they have already read "
            "from Efficy, then stop."
        )
    return 0
