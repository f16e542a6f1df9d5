"""The steps of a full sync as the state machine calls them, and the clean-up when an execution ends badly.

Begin → Plan → pages (Distributed Map) → Seams → Imports (import mode: import_step.py) → Tags → Finish, or Fail from any Catch. Every step may run twice
(Step Functions retries on Lambda errors; EventBridge and the sweeper may both report one ending), so each
is idempotent: the lock and the run end at most once, page counters are added once, and ending always
releases first and drains parked changes second (see parking.py for why that order closes the race).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..aws import client
from ..budget import PacedApsis, paced
from ..config import IntegrationConfig
from ..connections import apsis_client, efficy_client
from ..mapping import Desired, map_person, needed_fields
from ..observability import logger  # the PII-scrubbing logger: one logging path
from ..settings import settings
from ..store.configs import ConfigStore, UnknownIntegration
from ..store.persons import PersonStateStore
from .breaker import ALLOW_COUNTER, Breaker, read_allow_removals
from .import_step import page_queue
from .page import Pace, sync_page, worker_rate
from .parking import ParkingLot
from .plan import count_records, efficy_probe, plan_pages
from .report import build_report
from .runs import (
    STARTED_VIA_CLI,
    STARTED_VIA_STEPFUNCTIONS,
    STATUS_BY_EXECUTION,
    Lock,
    Run,
    RunStore,
    utc_now,
)
from .seams import report_counters, resync_seams, seam_windows
from .tags import QueryMembers, merge_results, mirror_query_tags, schedule_due

#: the share of pages that may fail before the run fails (the state machine's ToleratedFailurePercentage)
TOLERATED_FAILED_PAGES = 0.10


class TooManyPagesFailed(Exception):
    """More pages failed than the run tolerates; the state machine's Catch then fails the run."""


class RunNotFound(Exception):
    pass


class InvalidSyncInput(ValueError):
    """The execution's input is not {"integration_id": "<id>", "dry_run": false} (plus the CLI's "started_by");
    the message names what is wrong.

    An admin may start an execution by hand (console, `aws stepfunctions start-execution`): the failed execution
    must say what to fix, not show a KeyError."""


SYNC_INPUT_EXAMPLE = '{"integration_id": "acme-eu", "dry_run": false}'
_INPUT_KEYS = ("integration_id", "dry_run", "started_by", "allow_removals")
MAX_STARTED_BY = 512


@dataclass(frozen=True)
class SyncInput:
    integration_id: str
    dry_run: bool
    started_by: str | None  # what `efficy-sync full-sync start` records: the caller's AWS identity
    allow_removals: bool = False  # the admin confirmed removals the breaker would halt (breaker.py)


def parse_sync_input(sync_input: Any) -> tuple[str, bool]:
    """(integration_id, dry_run) from a full-sync execution's input; InvalidSyncInput naming the problem."""
    parsed = read_sync_input(sync_input)
    return parsed.integration_id, parsed.dry_run


def read_sync_input(sync_input: Any) -> SyncInput:
    """The whole input, `started_by` included (set by the CLI; absent when an admin starts the execution
    directly, and then the run records the execution's name); InvalidSyncInput naming the problem."""
    if not isinstance(sync_input, dict):
        raise InvalidSyncInput(
            f"the full-sync input must be a JSON object like {SYNC_INPUT_EXAMPLE}, not {type(sync_input).__name__}"
        )
    problems = []
    unknown = [k for k in sync_input if k not in _INPUT_KEYS]
    integration_id = sync_input.get("integration_id")
    if not isinstance(integration_id, str) or not integration_id.strip():
        found = "missing" if integration_id is None else f"{integration_id!r} is not an integration id"
        hint = [f"{k!r} (did you mean 'integration_id'?)" for k in unknown if _looks_like(k, "integration_id")]
        problems.append(f"integration_id is {found}" + (f"; found {', '.join(hint)}" if hint else ""))
    dry_run = sync_input.get("dry_run", False)
    if not isinstance(dry_run, bool):
        problems.append(f"dry_run must be true or false, not {dry_run!r}")
    started_by = sync_input.get("started_by")
    if started_by is not None and (not isinstance(started_by, str) or len(started_by) > MAX_STARTED_BY):
        problems.append(f"started_by must be text of at most {MAX_STARTED_BY} characters")
    allow_removals, problem = read_allow_removals(sync_input)
    if problem:
        problems.append(problem)
    others = [k for k in unknown if not _looks_like(k, "integration_id")]
    if others:
        problems.append(f"unknown key(s) {', '.join(map(repr, others))} (allowed: {', '.join(_INPUT_KEYS)})")
    if problems:
        raise InvalidSyncInput(f"invalid full-sync input: {'; '.join(problems)}. Expected {SYNC_INPUT_EXAMPLE}")
    return SyncInput(
        str(integration_id).strip(), bool(dry_run), started_by.strip() if started_by else None, allow_removals
    )


def _looks_like(key: str, wanted: str) -> bool:
    """integrationId, IntegrationID, integration-id ... for integration_id."""
    return key.replace("_", "").replace("-", "").lower() == wanted.replace("_", "").lower()


@dataclass
class FullSync:
    configs: ConfigStore
    runs: RunStore
    parking: ParkingLot
    states: PersonStateStore
    members: QueryMembers
    queue_url: str
    pages_bucket: str
    execution_status: Callable[[str], str | None]
    #: where the APSIS account's shared request budget lives (budget.py); "" = each step paces on its own
    budget_table: str = ""
    _versions: dict[tuple[str, int], IntegrationConfig] = field(default_factory=dict)

    @classmethod
    def from_settings(cls) -> FullSync:
        s = settings()
        runs = RunStore(s.state_table)
        return cls(
            # Not cached: Begin must snapshot the config the admin applied just before starting.
            configs=ConfigStore(s.config_table),
            runs=runs,
            parking=ParkingLot(s.state_table, runs),
            states=PersonStateStore(s.state_table),
            members=QueryMembers(s.state_table),
            queue_url=s.contact_queue_url,
            pages_bucket=s.pages_bucket,
            execution_status=describe_execution,
            budget_table=s.state_table,
        )

    def _apsis(self, cfg: IntegrationConfig, workers: int) -> PacedApsis:
        """The integration's APSIS client, paced by the account's budget shared with every other page and the
        real-time workers (budget.py); without a budget table, by a fixed share of the account per worker."""
        if self.budget_table:
            return paced(cfg, apsis_client(cfg), self.budget_table)
        return PacedApsis(apsis_client(cfg), Pace(worker_rate(workers)))

    # ---- steps --------------------------------------------------------------------------------------------
    def begin(self, sync_input: dict[str, Any], execution_arn: str) -> dict[str, Any]:
        parsed = read_sync_input(sync_input)
        integration_id, dry_run = parsed.integration_id, parsed.dry_run
        if parsed.started_by:
            started_by, started_via = parsed.started_by, STARTED_VIA_CLI
        else:  # console or `aws stepfunctions start-execution`: the execution's name says who and why
            started_by, started_via = execution_arn.rsplit(":", 1)[-1], STARTED_VIA_STEPFUNCTIONS
        try:
            cfg, version = self.configs.current(integration_id)
        except UnknownIntegration:
            raise InvalidSyncInput(
                f"invalid full-sync input: integration_id {integration_id!r} has no config "
                f"(apply one with `efficy-sync config apply FILE`; `efficy-sync config list` shows the known ones)"
            ) from None
        run = self.runs.begin(
            integration_id,
            execution_arn,
            dry_run=dry_run,
            config_version=version,
            write_mode=cfg.full_sync.write_mode,
            max_concurrency=cfg.full_sync.max_concurrency,
            started_by=started_by,
            started_via=started_via,
            holder_status=self.execution_status,
            end_stale=lambda lock, status: self._end(
                lock,
                STATUS_BY_EXECUTION.get(status or "", "failed"),
                {"Error": "ExecutionEnded", "Cause": f"its execution ended ({status or 'gone'}) before the run did"},
            ),
        )
        if parsed.allow_removals:
            self.runs.add_once(integration_id, run.run_id, ALLOW_COUNTER, {ALLOW_COUNTER: 1})
        return run.step_payload()

    def plan(self, run_payload: dict[str, Any]) -> dict[str, Any]:
        run = self._run(run_payload)
        cfg = self.config(run.integration_id, run.config_version)
        total = count_records(efficy_probe(efficy_client(cfg)))
        descriptors = plan_pages(total, cfg.efficy.page_size, cfg.full_sync.page_size)
        key = f"plans/{run.integration_id}/{run.run_id}.json"
        client("s3").put_object(
            Bucket=self.pages_bucket, Key=key, Body=json.dumps(descriptors).encode(), ContentType="application/json"
        )
        self.runs.set_plan(run, pages_total=len(descriptors), persons_estimate=total, plan_key=key)
        return {"bucket": self.pages_bucket, "key": key, "pages": len(descriptors)}

    def page(self, event: dict[str, Any]) -> dict[str, Any]:
        integration_id, run_id = str(event["integration_id"]), str(event["run_id"])
        descriptor = event["page"]
        number = int(descriptor["page"])
        run = self.runs.get(integration_id, run_id)
        if run is None or not run.active:
            return {"page": number, "skipped": f"run is {run.status if run else 'unknown'}"}
        cfg = self.config(integration_id, run.config_version)
        breaker = Breaker.of(self)
        gate = breaker.page_gate(run)
        try:
            result = sync_page(
                cfg,
                descriptor,
                efficy=efficy_client(cfg),
                apsis=self._apsis(cfg, run.max_concurrency),
                states=self.states,
                dry_run=run.dry_run,
                write_mode=run.write_mode,
                max_concurrency=run.max_concurrency,
                should_continue=self._still_running(integration_id, run_id),
                removal_gate=gate,
                queue=page_queue(run, number),
            )
        except Exception as exc:
            self.runs.page_failed(integration_id, run_id, number, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            breaker.remember(run, gate)
        if not result.stopped:
            self.runs.page_done(integration_id, run_id, number, result.persons, result.counters)
        return result.summary()

    def seams(
        self,
        run_payload: dict[str, Any],
        previous: dict[str, Any] | None = None,
        time_left: Callable[[], float] | None = None,
    ) -> dict[str, Any]:
        """One call of the Seams step (seams.py): re-reads the records a delete may have pushed across a page
        boundary. Nothing to do, at the cost of a recount (about 2·log2 N one-record calls), on a run that saw
        no delete. Answers `more: True` when it ran out of time; the state machine calls it again."""
        previous = previous or {}
        run = self._run(run_payload)
        if not run.active:
            return {"shift": 0, "windows": 0, "next": 0, "more": False}
        cfg = self.config(run.integration_id, run.config_version)
        efficy = efficy_client(cfg)
        if "shift" in previous:
            shift = int(previous["shift"])
        else:
            drop = 0
            if run.persons_estimate:
                drop = max(0, run.persons_estimate - count_records(efficy_probe(efficy)))
            shift = max(int(run.counters.get("parked_deletes", 0)), drop)
            if shift:
                self.runs.add_once(run.integration_id, run.run_id, "seams", {"seam_shift": shift})
        descriptors = plan_pages(run.persons_estimate or 0, cfg.efficy.page_size, cfg.full_sync.page_size)
        windows = seam_windows(descriptors, shift)

        breaker = Breaker.of(self)
        gate = breaker.page_gate(run)

        def counted(window: dict[str, Any], counters: Counter[str]) -> None:
            self.runs.add_once(run.integration_id, run.run_id, f"seam-{window['page']}", report_counters(counters))

        done = resync_seams(
            cfg,
            windows,
            efficy=efficy,
            apsis=self._apsis(cfg, run.max_concurrency),
            states=self.states,
            dry_run=run.dry_run,
            max_concurrency=run.max_concurrency,
            start=int(previous.get("next", 0)),
            time_left=time_left,
            should_continue=self._still_running(run.integration_id, run.run_id),
            on_window=counted,
            removal_gate=gate,
        )
        breaker.remember(run, gate)
        return {
            "shift": shift,
            "windows": len(windows),
            "next": done.next,
            "more": done.more,
            "persons": int(previous.get("persons", 0)) + done.counters["seam_persons"],
        }

    def tags(
        self,
        run_payload: dict[str, Any],
        previous: dict[str, Any] | None = None,
        time_left: Callable[[], float] | None = None,
        hold: bool = True,
    ) -> dict[str, Any]:
        """One call of the Tags step. It answers `more: True` when it ran out of time; the state machine then
        calls it again with this answer as `previous`, and the counts add up (see tags.mirror_query_tags).
        `hold`: untags wait for the breaker's gate (breaker.py); its release calls this with hold=False."""
        run = self._run(run_payload)
        cfg = self.config(run.integration_id, run.config_version)
        if not cfg.tags.queries:
            return {"queries": 0, "tagged": 0, "untagged": 0, "failed": 0, "tags": {}, "more": False}
        efficy = efficy_client(cfg)

        def would_sync(keys: list[int]) -> set[int]:
            persons = efficy.get_persons(keys, needed_fields(cfg)) if keys else {}
            return {key for key, person in persons.items() if isinstance(map_person(cfg, person), Desired)}

        result = mirror_query_tags(
            cfg,
            run_query=efficy.run_query,
            would_sync=would_sync,
            apsis=self._apsis(cfg, 1),
            states=self.states,
            members=self.members,
            dry_run=run.dry_run,
            run_id=run.run_id,
            time_left=time_left,
            hold_untags=Breaker.of(self).hold_untags(run) if hold else None,
        )
        return merge_results(previous, result)

    def finish(self, event: dict[str, Any]) -> dict[str, Any]:
        run = self._run(event["run"])
        if not run.active:
            return run.report or build_report(run, status=run.status)
        failed = self._failed_pages(run)
        total = run.pages_total or 0
        if total and len(failed) > TOLERATED_FAILED_PAGES * total:
            first = failed[0]
            raise TooManyPagesFailed(
                f"{len(failed)} of {total} pages failed (page {first['page']}: {first.get('error') or 'no result'})"
            )
        self._release_and_drain(run)
        run = self._run(event["run"])
        report = build_report(
            run, status="succeeded", failed_pages=failed, query_tags=event.get("tags"), ended_at=utc_now()
        )
        if not self.runs.end(run.integration_id, run.run_id, "succeeded", report=report):
            ended = self._run(event["run"])
            return ended.report or report
        return report

    def fail(self, event: dict[str, Any]) -> dict[str, Any]:
        run = self._run(event["run"])
        error = dict(event.get("error") or {})
        error = {"Error": str(error.get("Error", "Unknown")), "Cause": _short_cause(error.get("Cause"))}
        self._release_and_drain(run)
        run = self._run(event["run"])
        report = build_report(run, status="failed", failed_pages=self._failed_pages(run), ended_at=utc_now())
        report["error"] = error
        self.runs.end(run.integration_id, run.run_id, "failed", error=error, report=report)
        return {"status": "failed", "run_id": run.run_id, "error": error}

    # ---- clean-up (EventBridge and the sweeper) --------------------------------------------------------------
    def execution_ended(self, execution_arn: str, execution_status: str) -> dict[str, Any]:
        """An execution ended ABORTED, TIMED_OUT or FAILED: end its run, release its lock, re-enqueue parked."""
        lock = next((lk for lk in self.runs.locks() if lk.execution_arn == execution_arn), None)
        if lock is None:
            return {"matched": False}  # e.g. a start refused by Begin: it never held a lock
        status = STATUS_BY_EXECUTION.get(execution_status, "failed")
        error = None
        if status != "succeeded":
            error = {
                "Error": f"Execution{execution_status.title().replace('_', '')}",
                "Cause": f"execution {execution_status}",
            }
        requeued = self._end(lock, status, error)
        return {"matched": True, "integration_id": lock.integration_id, "run_id": lock.run_id, "requeued": requeued}

    def sweep(self, time_left: Callable[[], float] | None = None) -> dict[str, Any]:
        """Reconcile every lock with Step Functions (EventBridge delivery is best effort), and re-enqueue keys
        parked after an ending run's drain."""
        ended: list[str] = []
        requeued = 0
        for lock in self.runs.locks():
            if lock.held:
                status = self.execution_status(lock.execution_arn)
                if status != "RUNNING":
                    requeued += self._end(
                        lock,
                        STATUS_BY_EXECUTION.get(status or "", "failed"),
                        {"Error": "ExecutionEnded", "Cause": f"found {status or 'gone'} by the sweeper"},
                    )
                    ended.append(lock.integration_id)
            elif self.parking.has_parked(lock.integration_id):
                n = self.parking.drain(lock.integration_id, self.queue_url)
                if n and lock.run_id:
                    self.runs.add(lock.integration_id, lock.run_id, {"requeued": n})
                requeued += n
        return {"ended": ended, "requeued": requeued, "query_tags": self.scheduled_query_tags(time_left=time_left)}

    def scheduled_query_tags(
        self, now: datetime | None = None, time_left: Callable[[], float] | None = None
    ) -> dict[str, Any]:
        """Query tags with a schedule of their own run between full syncs (a full sync runs them all anyway,
        so an integration whose full sync holds the lock is left to it). A mirror that runs out of time is
        resumed by the next sweep: its snapshot, and so its last run, is written only once it completes."""
        now = now or datetime.now(UTC)
        done: dict[str, Any] = {}
        for integration_id in self.configs.list_ids():
            try:
                cfg = self.configs.get(integration_id)
                due = [
                    q
                    for q in cfg.tags.queries
                    if q.schedule and schedule_due(q.schedule, self.members.last_run(integration_id, q.query), now)
                ]
                lock = self.runs.lock(integration_id)
                if not due or (lock is not None and lock.held):
                    continue
                only_due = cfg.model_copy(update={"tags": cfg.tags.model_copy(update={"queries": due})})
                done[integration_id] = mirror_query_tags(
                    only_due,
                    run_query=efficy_client(cfg).run_query,
                    apsis=self._apsis(cfg, 1),
                    states=self.states,
                    members=self.members,
                    dry_run=False,
                    run_id=f"schedule-{utc_now()}",
                    time_left=time_left,
                    hold_untags=Breaker.of(self).scheduled_hold(cfg),
                )
            except Exception as exc:  # one integration's outage must not stop the sweeper for the others
                logger.warning("scheduled query tags of %s failed: %s", integration_id, exc)
                done[integration_id] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        return done

    # ---- helpers ------------------------------------------------------------------------------------------
    def _still_running(self, integration_id: str, run_id: str) -> Callable[[], bool]:
        """For long work inside a step: has the run been cancelled or ended meanwhile?"""

        def check() -> bool:
            current = self.runs.get(integration_id, run_id)
            return current is not None and current.active

        return check

    def config(self, integration_id: str, version: int) -> IntegrationConfig:
        """The config the run started with, so a change applied mid-run does not split the run in two;
        versions never change, so they are cached for the container's life."""
        if version <= 0:
            return self.configs.get(integration_id)
        key = (integration_id, version)
        if key not in self._versions:
            self._versions[key] = self.configs.version(integration_id, version)
        return self._versions[key]

    def _run(self, payload: dict[str, Any]) -> Run:
        run = self.runs.get(str(payload["integration_id"]), str(payload["run_id"]))
        if run is None:
            raise RunNotFound(f"run {payload.get('run_id')} of {payload.get('integration_id')} not found")
        return run

    def _release_and_drain(self, run: Run) -> int:
        self.runs.release(run.integration_id, run.execution_arn)
        n = self.parking.drain(run.integration_id, self.queue_url)
        if n:
            self.runs.add(run.integration_id, run.run_id, {"requeued": n})
        return n

    def _end(self, lock: Lock, status: str, error: dict[str, Any] | None) -> int:
        self.runs.release(lock.integration_id, lock.execution_arn)
        n = self.parking.drain(lock.integration_id, self.queue_url)
        run = self.runs.get(lock.integration_id, lock.run_id) if lock.run_id else None
        if run is None:
            return n
        if n:
            self.runs.add(run.integration_id, run.run_id, {"requeued": n})
            run = self.runs.get(run.integration_id, run.run_id) or run
        if run.active:
            report = build_report(run, status=status, failed_pages=self._failed_pages(run), ended_at=utc_now())
            if error:
                report["error"] = error
            self.runs.end(run.integration_id, run.run_id, status, error=error, report=report)
        return n

    def _failed_pages(self, run: Run) -> list[dict[str, Any]]:
        records = self.runs.pages(run.integration_id, run.run_id)
        failed = []
        for number in range(run.pages_total or 0):
            record = records.get(number)
            if number not in run.pages_counted:
                failed.append(
                    {
                        "page": number,
                        "attempts": record.attempts if record else 0,
                        "error": (record.last_error if record else None) or "no result",
                    }
                )
        return failed


def _short_cause(cause: Any) -> str:
    """Lambda errors arrive as a JSON string with a stack trace: keep the message."""
    text = str(cause or "")
    try:
        parsed = json.loads(text)
        if isinstance(parsed, dict) and "errorMessage" in parsed:
            text = f"{parsed.get('errorType', '')}: {parsed['errorMessage']}".strip(": ")
    except ValueError:
        pass
    return text[:2000]


def describe_execution(execution_arn: str) -> str | None:
    """RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED | PENDING_REDRIVE, or None when there is no such
    execution."""
    sfn = client("stepfunctions")
    try:
        return sfn.describe_execution(executionArn=execution_arn)["status"]
    except (sfn.exceptions.ExecutionDoesNotExist, sfn.exceptions.InvalidArn):
        return None
