"""The steps of a full sync as the state machine calls them, and the clean-up when an execution ends badly.

Begin → Plan → pages (Distributed Map) → Seams → Imports (import mode: import_step.py) → Tags → Finish, or Fail from any Catch. Every step may run twice
(Step Functions retries on Lambda errors; EventBridge and the sweeper may both report one ending), so each
is idempotent: the lock and the run end at most once, page counters are added once, and ending always
releases first and drains parked changes second (see parking.py for why that order closes the race); the run
ends even when that drain fails (ending.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..budget import PacedApsis, paced
from ..config import IntegrationConfig
from ..mapping import Desired, map_person, needed_fields
from ..observability import logger
from ..safety import ALLOW_COUNTER, CONFIRMED_COUNTER
from ..store.configs import ConfigStore, UnknownIntegration
from ..store.protocols import PersonStates
from ..store.removals import HeldRemovals, RemovalBreaker
from .breaker import CONFIRMATION_HISTORY, Breaker, confirmation, emptied_up_to, held_source, release_untags
from .ending import end_execution, failed_pages, release_and_drain
from .import_step import page_queue, queued_keys, uses_collector
from .page import Pace, sync_page, worker_rate
from .parking import ParkingLot
from .plan import count_records, count_up_to, efficy_probe, key_at, noting_waits, plan_pages
from .query_plan import decode_plan, members_key, plan_query_members, tags_of, widen_planned
from .report import build_report
from .run_config import held_to_live, in_write_mode
from .runs import (
    STARTED_VIA_CLI,
    STARTED_VIA_STEPFUNCTIONS,
    STATUS_BY_EXECUTION,
    Run,
    RunStore,
    utc_now,
)
from .seams import report_counters, resync_seams, seam_windows
from .steps import FailResult, PageItem, PlanResult, RunRef, StepError, parse_page
from .sync_input import InvalidSyncInput, SyncInput, parse_sync_input, read_sync_input
from .tags import QueryMembers, merge_results, mirror_query_tags

if TYPE_CHECKING:
    from ..clients.apsis import ApsisClient
    from ..clients.efficy import EfficyClient

__all__ = [
    "FullSync",
    "InvalidSyncInput",
    "PlanStore",
    "RunNotFound",
    "SyncInput",
    "TooManyPagesFailed",
    "parse_sync_input",
    "read_sync_input",
]

#: the share of pages that may fail before the run fails (the state machine's ToleratedFailurePercentage)
TOLERATED_FAILED_PAGES = 0.10


class TooManyPagesFailed(Exception):
    """More pages failed than the run tolerates; the state machine's Catch then fails the run."""


class RunNotFound(Exception):
    """A step's run object names a run the run store does not hold."""


class PlanStore(Protocol):
    """Where Plan writes a run's page descriptors for the Distributed Map's ItemReader (an S3 bucket:
    wiring.S3Plans)."""

    @property
    def bucket(self) -> str: ...

    def put(self, key: str, descriptors: list[dict[str, Any]]) -> None: ...

    def get(self, key: str) -> list[dict[str, Any]] | None: ...


@dataclass
class FullSync:
    """The steps of one deployment's full syncs. It is handed everything it talks to (wiring.build_full_sync
    builds them from the settings), so the steps run against moto, the simulators or fakes alike."""

    configs: ConfigStore
    runs: RunStore
    parking: ParkingLot
    states: PersonStates
    members: QueryMembers
    queue_url: str
    plans: PlanStore
    #: Step Functions' DescribeExecution status of an execution ARN (None when there is no such execution)
    execution_status: Callable[[str], str | None]
    #: the integration's API clients (connections.efficy_client / apsis_client: kept per warm container)
    efficy_for: Callable[[IntegrationConfig], EfficyClient]
    apsis_for: Callable[[IntegrationConfig], ApsisClient]
    #: the blast-radius breaker's stores (breaker.py): removals held by a run, the real-time breaker's base
    held: HeldRemovals
    removal_breaker: RemovalBreaker
    #: where the APSIS account's shared request budget lives (budget.py); "" = each step paces on its own
    budget_table: str = ""
    _versions: dict[tuple[str, int], IntegrationConfig] = field(default_factory=dict)
    #: a run's planned query members (query_plan.py), kept while this warm container serves its pages
    _planned: dict[str, dict[str, set[int]]] = field(default_factory=dict)

    def _apsis(self, cfg: IntegrationConfig, workers: int) -> PacedApsis:
        """The integration's APSIS client, paced by the account's budget shared with every other page and the
        real-time workers (budget.py); without a budget table, by a fixed share of the account per worker."""
        if self.budget_table:
            return paced(cfg, self.apsis_for(cfg), self.budget_table)
        return PacedApsis(self.apsis_for(cfg), Pace(worker_rate(workers)))

    # ---- steps --------------------------------------------------------------------------------------------
    def begin(self, sync_input: Any, execution_arn: str) -> dict[str, Any]:
        """Takes the integration's lock and answers the run object every later step receives (RunRef)."""
        parsed = read_sync_input(sync_input)
        integration_id, dry_run = parsed.integration_id, parsed.dry_run
        if parsed.started_by:
            started_by, started_via = parsed.started_by, STARTED_VIA_CLI
        else:  # console or `aws stepfunctions start-execution`: the execution's name says who and why
            started_by, started_via = execution_arn.rsplit(":", 1)[-1], STARTED_VIA_STEPFUNCTIONS
        confirmed: dict[str, int] = {}
        problem: str | None = None
        if parsed.allow_removals_up_to:  # the kinds of the run the admin read, before this run is the newest
            confirmed, problem = confirmation(
                self.runs.history(integration_id, CONFIRMATION_HISTORY), parsed.allow_removals_up_to
            )
        if problem:
            raise InvalidSyncInput(
                f"invalid full-sync input: allow_removals_up_to confirms the counts a halted run (or a dry run that "
                f"would halt) reported, and {problem}: see them with `full-sync start {integration_id} --dry-run`"
            )
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
            write_mode=parsed.write_mode or cfg.full_sync.write_mode,
            max_concurrency=cfg.full_sync.max_concurrency,
            started_by=started_by,
            started_via=started_via,
            holder_status=self.execution_status,
            end_stale=lambda lock, status: end_execution(
                self,
                lock,
                STATUS_BY_EXECUTION.get(status or "", "failed"),
                {"Error": "ExecutionEnded", "Cause": f"its execution ended ({status or 'gone'}) before the run did"},
            ),
        )
        if parsed.allow_removals:
            self.runs.add_once(integration_id, run.run_id, ALLOW_COUNTER, {ALLOW_COUNTER: 1})
        elif confirmed:
            self.runs.add_once(integration_id, run.run_id, CONFIRMED_COUNTER, confirmed)
        return run.step_payload()

    def plan(self, run_payload: RunRef | Mapping[str, Any]) -> PlanResult:
        """Counts the persons and writes the page descriptors where the Distributed Map reads them."""
        run = self._run(run_payload)
        cfg = self.config(run.integration_id, run.config_version)
        with noting_waits(self.runs, run):  # `full-sync status` says what the retries wait on
            total = count_records(efficy_probe(self.efficy_for(cfg)))
            if cfg.tags.queries and run.write_mode != "import":  # import mode sends query tags as columns
                planned = plan_query_members(cfg, self.efficy_for(cfg).run_query)
                self.plans.put(members_key(run.integration_id, run.run_id), planned)
                if not run.dry_run:
                    widen_planned(cfg, self.members, planned, run.run_id)
            last_key = key_at(self.efficy_for(cfg), total - 1) if total else None
        descriptors = plan_pages(total, cfg.efficy.page_size, cfg.full_sync.page_size)
        key = f"plans/{run.integration_id}/{run.run_id}.json"
        self.plans.put(key, descriptors)
        self.runs.set_plan(run, pages_total=len(descriptors), persons_estimate=total, plan_key=key, last_key=last_key)
        return PlanResult(bucket=self.plans.bucket, key=key, pages=len(descriptors))

    def page(self, event: PageItem | Mapping[str, Any]) -> dict[str, Any]:
        """One page of the Distributed Map (a child execution); records the page done, or failed and raises."""
        item = event if isinstance(event, PageItem) else parse_page(event)
        integration_id, run_id, descriptor, number = item.integration_id, item.run_id, item.page, item.number
        run = self.runs.get(integration_id, run_id)
        if run is None or not run.active:
            return {"page": number, "skipped": f"run is {run.status if run else 'unknown'}"}
        cfg = self.run_config(run)
        breaker = Breaker.of(self)
        gate = breaker.page_gate(run)
        try:
            result = sync_page(
                cfg,
                descriptor,
                efficy=self.efficy_for(cfg),
                apsis=self._apsis(cfg, run.max_concurrency),
                states=self.states,
                dry_run=run.dry_run,
                write_mode=run.write_mode,
                max_concurrency=run.max_concurrency,
                should_continue=self._still_running(integration_id, run_id),
                removal_gate=gate,
                queue=page_queue(run, number),
                query_tags=tags_of(self._planned_members(cfg, run_id)) if run.write_mode != "import" else None,
            )
        except Exception as exc:  # its held removals are not kept: the gate never counts a failed page's
            self.runs.page_failed(integration_id, run_id, number, f"{type(exc).__name__}: {exc}")
            raise
        breaker.remember(run, gate)
        if result.stopped:  # the run ended meanwhile: what the page did still counts, the page is not done
            self.runs.page_stopped(integration_id, run_id, number, result.persons, result.counters)
        else:
            self.runs.page_done(integration_id, run_id, number, result.persons, result.counters)
        return result.summary()

    def _planned_members(self, cfg: IntegrationConfig, run_id: str) -> dict[str, set[int]]:
        """The run's planned query members (query_plan.py), read once per warm container and run."""
        if not cfg.tags.queries:
            return {}
        if run_id not in self._planned:
            self._planned.clear()  # one run at a time per container: keep memory to one run's members
            try:
                planned = self.plans.get(members_key(cfg.integration_id, run_id))
            except Exception as exc:  # unreadable (a run planned before this version, S3): the Tags step tags
                logger.warning("planned query members not read; the Tags step tags them: %s", type(exc).__name__)
                planned = None
            self._planned[run_id] = decode_plan(planned)
        return self._planned[run_id]

    def seams(
        self,
        run_payload: RunRef | Mapping[str, Any],
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
        cfg = self.run_config(run)
        efficy = self.efficy_for(cfg)
        if "shift" in previous:
            shift = int(previous["shift"])
        else:
            drop = 0
            if run.persons_estimate:
                drop = max(0, run.persons_estimate - count_records(efficy_probe(efficy)))
                # deletes before the plan's last key, whatever was created since: a binary search by K_CONTACT,
                # meaningless when the pages read the export in another order (it counted deletes that never
                # happened, and Seams re-read about N²/page_size records); the count and the parked deletes stay
                if run.last_key is not None and not run.counters.get("export_unordered"):
                    drop = max(drop, run.persons_estimate - count_up_to(efficy, run.last_key, run.persons_estimate))
            shift = max(int(run.counters.get("parked_deletes", 0)), drop)
            if shift:
                self.runs.add_once(run.integration_id, run.run_id, "seams", {"seam_shift": shift})
        descriptors = plan_pages(run.persons_estimate or 0, cfg.efficy.page_size, cfg.full_sync.page_size)
        windows = seam_windows(descriptors, shift)

        breaker = Breaker.of(self)
        gate = breaker.page_gate(run)

        def counted(window: dict[str, Any], counters: Counter[str]) -> None:
            token = f"seam-{window.get('seam', window['page'])}"  # one per Efficy boundary
            self.runs.add_once(run.integration_id, run.run_id, token, report_counters(counters))

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
            counted=set(self.held.held_by(run.integration_id, held_source(run))) if gate is not None else (),
            # import mode: the persons the pages queued are the Imports step's (synced here too, each was
            # counted created here and unchanged there: a report whose outcomes outnumbered the persons read)
            skip=queued_keys(run) if uses_collector(run) else (),
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
        run_payload: RunRef | Mapping[str, Any],
        previous: dict[str, Any] | None = None,
        time_left: Callable[[], float] | None = None,
        hold: bool = True,
        after: int | None = None,
    ) -> dict[str, Any]:
        """One call of the Tags step. It answers `more: True` when it ran out of time; the state machine then
        calls it again with this answer as `previous`, and the counts add up and the mirror resumes after its
        `next` member (see tags.mirror_query_tags). `hold`: untags wait for the breaker's gate (breaker.py); its
        release calls this with hold=False (a tag's untags beyond what the gate let through are held again:
        breaker.release_untags), and with `after` (the `next` of its own previous call)."""
        run = self._run(run_payload)
        cfg = self.run_config(run)
        if not cfg.tags.queries:
            return {"queries": 0, "tagged": 0, "untagged": 0, "failed": 0, "tags": {}, "more": False}
        efficy = self.efficy_for(cfg)

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
            hold_untags=Breaker.of(self).hold_untags(run) if hold else release_untags(run),
            should_continue=self._still_running(run.integration_id, run.run_id),
            emptied_up_to=emptied_up_to(run),
            after=after if after is not None else (previous or {}).get("next"),
        )
        return merge_results(previous, result)

    def finish(self, run_payload: RunRef | Mapping[str, Any], tags: dict[str, Any] | None = None) -> dict[str, Any]:
        """Ends the run `succeeded` with its report (the execution's output), or fails it through the Catch
        when more pages failed than tolerated. `tags`: the Tags step's last answer, for the report. A re-enqueue
        SQS refuses does not fail it: its sync is done, and the keys stay parked for the sweeper (ending.py)."""
        run = self._run(run_payload)
        if not run.active:
            return run.report or build_report(run, status=run.status)
        failed = failed_pages(self.runs, run)
        total = run.pages_total or 0
        if total and len(failed) > TOLERATED_FAILED_PAGES * total:
            first = failed[0]
            raise TooManyPagesFailed(
                f"{len(failed)} of {total} pages failed (page {first['page']}: {first.get('error') or 'no result'})"
            )
        drained = release_and_drain(self, run)
        run = self._run(run_payload)
        report = build_report(run, status="succeeded", failed_pages=failed, query_tags=tags, ended_at=utc_now())
        drained.noted(report)
        if not self.runs.end(run.integration_id, run.run_id, "succeeded", report=report):
            ended = self._run(run_payload)
            return ended.report or report
        return report

    def fail(self, run_payload: RunRef | Mapping[str, Any], error: StepError | Mapping[str, Any] | None) -> FailResult:
        """The Catch of any step after Begin: the same clean-up as Finish, and the run marked failed."""
        run = self._run(run_payload)
        caught = error if isinstance(error, StepError) else StepError.model_validate(error or {})
        reason = {"Error": str(caught.Error), "Cause": _short_cause(caught.Cause)}
        drained = release_and_drain(self, run)
        run = self._run(run_payload)
        report = drained.noted(
            build_report(run, status="failed", failed_pages=failed_pages(self.runs, run), ended_at=utc_now())
        )
        report["error"] = reason
        self.runs.end(run.integration_id, run.run_id, "failed", error=reason, report=report)
        return FailResult(run_id=run.run_id, error=reason)

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
        requeued = end_execution(self, lock, status, error)
        return {"matched": True, "integration_id": lock.integration_id, "run_id": lock.run_id, "requeued": requeued}

    # ---- helpers ------------------------------------------------------------------------------------------
    def _still_running(self, integration_id: str, run_id: str) -> Callable[[], bool]:
        """For long work inside a step: has the run been cancelled or ended meanwhile?"""

        def check() -> bool:
            return self.runs.is_active(integration_id, run_id)

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

    def run_config(self, run: Run) -> IntegrationConfig:
        """What the run's steps sync persons with: its own version in its own write mode, held to the sync
        conditions of a version applied since and without the consent and profile-tag mappings it removed
        (run_config.py)."""
        cfg = in_write_mode(self.config(run.integration_id, run.config_version), run.write_mode)
        try:
            live, version = self.configs.current(run.integration_id)
        except UnknownIntegration:
            return cfg
        return cfg if version == run.config_version else held_to_live(cfg, live)

    def _run(self, payload: RunRef | Mapping[str, Any]) -> Run:
        ref = payload if isinstance(payload, RunRef) else RunRef.model_validate(payload)
        run = self.runs.get(ref.integration_id, ref.run_id)
        if run is None:
            raise RunNotFound(f"run {ref.run_id} of {ref.integration_id} not found")
        return run


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
