"""The cleanup Lambda's sweep (EventBridge delivery is best effort): every lock reconciled with Step Functions,
keys parked after an ending run's drain re-enqueued, and the query tags with a schedule of their own mirrored
between full syncs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..observability import logger  # the PII-scrubbing logger: one logging path
from ..store.run_records import execution_ended
from .breaker import Breaker
from .ending import drain, end_execution
from .runs import STATUS_BY_EXECUTION, utc_now
from .tags import mirror_query_tags, schedule_due

if TYPE_CHECKING:
    from .lifecycle import FullSync


def sweep(full_sync: FullSync, time_left: Callable[[], float] | None = None) -> dict[str, Any]:
    """Reconcile every lock with Step Functions (EventBridge delivery is best effort), and re-enqueue keys
    parked after an ending run's drain, or left parked by one that failed (ending.py).

    A released lock whose run is still running and whose execution has ended is ended too: its end was cut off
    after the release (the Fail step or the clean-up died before recording it), and a sweep that only drained
    such a lock left the run RUNNING for good."""
    ended: list[str] = []
    requeued = 0
    left: dict[str, int] = {}
    failed: dict[str, str] = {}
    for lock in full_sync.runs.locks():
        try:
            requeued += _sweep_lock(full_sync, lock, ended, left)
        except Exception as exc:  # one integration's failure (a DescribeExecution refused) stops none of the others
            failed[lock.integration_id] = f"{type(exc).__name__}: {exc}"[:300]
            logger.warning("the sweep could not reconcile a run", extra={"integration_id": lock.integration_id})
    result = {
        "ended": ended,
        "requeued": requeued,
        **({"left_parked": left} if left else {}),
        "query_tags": scheduled_query_tags(full_sync, time_left=time_left),
    }
    if failed:  # after the others are done: the invocation fails (retried, and seen), not a quiet success
        raise SweepIncomplete(f"the sweep could not reconcile {sorted(failed)}: {failed}; done: {result}")
    return result


class SweepIncomplete(RuntimeError):
    """Some integrations' runs could not be reconciled this time (the others were)."""


def _sweep_lock(full_sync: FullSync, lock: Any, ended: list[str], left: dict[str, int]) -> int:
    """One lock: its run ended if its execution has, its parked changes re-sent once released; the persons sent."""
    if lock.held or (lock.run_id and full_sync.runs.is_active(lock.integration_id, lock.run_id)):
        status = full_sync.execution_status(lock.execution_arn)
        if execution_ended(status):
            requeued = end_execution(
                full_sync,
                lock,
                STATUS_BY_EXECUTION.get(status or "", "failed"),
                {"Error": "ExecutionEnded", "Cause": f"found {status or 'gone'} by the sweeper"},
            )
            ended.append(lock.integration_id)
            return requeued
    if not lock.held and full_sync.parking.has_parked(lock.integration_id):
        drained = drain(full_sync, lock.integration_id, lock.run_id)
        if drained.error:  # SQS still refuses: the next sweep tries again; the other integrations go on
            left[lock.integration_id] = drained.left
        return drained.requeued
    return 0


def scheduled_query_tags(
    full_sync: FullSync, now: datetime | None = None, time_left: Callable[[], float] | None = None
) -> dict[str, Any]:
    """Query tags with a schedule of their own run between full syncs (a full sync runs them all anyway,
    so an integration whose full sync holds the lock is left to it). A mirror that runs out of time is
    resumed by the next sweep: its snapshot, and so its last run, is written only once it completes, and each
    query's snapshot head keeps where it stopped (`next`, store/query_members.py: resume_key), so the next
    sweep goes on from there instead of the lowest key (which stalled a query whose members already done took
    longer to read than one sweep, until the next full sync)."""
    now = now or datetime.now(UTC)
    done: dict[str, Any] = {}
    try:
        configs = full_sync.configs.scheduled()
    except Exception as exc:  # DynamoDB unreachable: the locks above were still reconciled
        logger.warning("reading the scheduled query tags failed: %s", exc)
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    for integration_id, load in configs.items():
        try:
            cfg = load()
            due = [
                q
                for q in cfg.tags.queries
                if q.schedule and schedule_due(q.schedule, full_sync.members.last_run(integration_id, q.query), now)
            ]
            if not due:
                continue
            lock = full_sync.runs.lock(integration_id)
            if lock is not None and lock.held:
                continue
            passes = {q.query: full_sync.members.resume_key(integration_id, q.query) for q in due}
            after = _resume_after(list(passes.values()))
            only_due = cfg.model_copy(update={"tags": cfg.tags.model_copy(update={"queries": due})})
            result = mirror_query_tags(
                only_due,
                run_query=full_sync.efficy_for(cfg).run_query,
                apsis=full_sync._apsis(cfg, 1),
                states=full_sync.states,
                members=full_sync.members,
                dry_run=False,
                run_id=f"schedule-{utc_now()}",
                time_left=time_left,
                hold_untags=Breaker.of(full_sync).scheduled_hold(cfg),
                after=after,
            )
            if result["more"] and result.get("next") is not None:
                # the queries that ran (a refused one has no counts): the next sweep resumes after `next`
                for query in {q.query for q in due if q.tag in result["tags"]}:
                    full_sync.members.set_resume_key(integration_id, query, result["next"], snapshot=passes[query][1])
            done[integration_id] = {**result, **({"resumed_after": after} if after is not None else {})}
        except Exception as exc:  # one integration's outage must not stop the sweeper for the others
            logger.warning("scheduled query tags of %s failed: %s", integration_id, exc)
            done[integration_id] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return done


def _resume_after(passes: list[tuple[int | None, str]]) -> int | None:
    """Where the due queries' mirror resumes: the lowest of their resume keys, or the lowest member (None) when
    one of them has none (its pass starts now, or a snapshot written since started a new one). A member who
    joined below the key since is left to the pass after (which starts from the lowest key once this one ends);
    former members below it stay in the snapshot the finishing call writes, so the next pass untags them."""
    keys = [key for key, _ in passes if key is not None]
    return min(keys) if keys and len(keys) == len(passes) else None
