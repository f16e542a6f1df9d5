"""Full-sync runs in the STATE table: the per-integration lock, the run with its progress counters, page records.

Items (pk / sk):
- "FULLSYNC#LOCKS" / <integration_id>: who holds the integration's lock (run_id, execution_arn, status
  running | released). All locks share one partition, so the sweeper finds every one with a single Query.
- "FULLSYNC#<integration_id>" / "RUN#<run_id>": the run, its timings and its counters (attributes "c:<name>",
  bumped with atomic ADDs, together with the set of pages already counted so a page run twice counts once).
  Run ids start with the UTC start time, so the newest run sorts last. The run items are the run history
  (`efficy-sync full-sync list`): who started each run, when, with which config version, its outcome, counters
  and report. An ended run gets `expires_at` (the table's TTL attribute), RUN_RETENTION_DAYS after its end,
  and `prune` keeps at most RUN_HISTORY_MAX ended runs per integration, so the history stays bounded.
- "FULLSYNC#<integration_id>#<run_id>" / "PAGE#<n>": one per page: its attempts, and the last error if failing;
  they expire (TTL) RUN_RETENTION_DAYS after they were written, as their run does after it ended.

Taking the lock is a conditional write, so two starts can never both run; the same execution asking again
(Step Functions retries Begin) gets its own run back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from ..aws import client
from ..observability import logger  # the PII-scrubbing logger: one logging path
from .run_counters import RunCounters
from .run_records import (
    ACTIVE,
    ENDED_STATUSES,
    LOCKS_PK,
    RUN_HISTORY_MAX,
    _lock_key,
    _n,
    _plain,
    _run_key,
    _s,
    expires_at,
    new_run_id,
    query_partition,
)
from .run_records import RUN_RETENTION_DAYS as RUN_RETENTION_DAYS  # re-exported: importers of `runs` keep working
from .run_records import STARTED_VIA_CLI as STARTED_VIA_CLI
from .run_records import STARTED_VIA_STEPFUNCTIONS as STARTED_VIA_STEPFUNCTIONS
from .run_records import STATUS_BY_EXECUTION as STATUS_BY_EXECUTION
from .run_records import TTL_ATTRIBUTE as TTL_ATTRIBUTE
from .run_records import Lock as Lock
from .run_records import PageRecord as PageRecord
from .run_records import Run as Run
from .run_records import SyncAlreadyRunning as SyncAlreadyRunning
from .run_records import utc_now as utc_now


# ---- the store --------------------------------------------------------------------------------------------
class RunStore(RunCounters):
    def __init__(self, table_name: str) -> None:
        self._table = table_name

    # ---- lock and run ---------------------------------------------------------------------------------
    def begin(
        self,
        integration_id: str,
        execution_arn: str,
        *,
        dry_run: bool,
        config_version: int,
        write_mode: str,
        max_concurrency: int,
        holder_status: Callable[[str], str | None],
        end_stale: Callable[[Lock, str | None], object],
        started_by: str = "",
        started_via: str = "",
    ) -> Run:
        """Take the integration's lock and create the run, in one transaction.

        `holder_status(arn)` returns the Step Functions status of the execution holding the lock (None when it
        does not exist). A lock whose holder has ended is taken over once `end_stale(lock, status)` has cleaned
        up after it. Raises SyncAlreadyRunning when the holder still runs.
        """
        ddb = client("dynamodb")
        takeover_from: str | None = None
        for _ in range(3):
            run = Run(
                integration_id=integration_id,
                run_id=new_run_id(execution_arn),
                execution_arn=execution_arn,
                dry_run=dry_run,
                status=ACTIVE,
                started_at=utc_now(),
                config_version=config_version,
                write_mode=write_mode,
                max_concurrency=max_concurrency,
                started_by=started_by,
                started_via=started_via,
            )
            lock_put: dict[str, Any] = {
                "TableName": self._table,
                "Item": {
                    **_lock_key(integration_id),
                    "run_id": _s(run.run_id),
                    "execution_arn": _s(execution_arn),
                    "status": _s(ACTIVE),
                    "started_at": _s(run.started_at),
                    "dry_run": {"BOOL": dry_run},
                },
                "ExpressionAttributeNames": {"#st": "status"},
            }
            if takeover_from is None:
                lock_put["ConditionExpression"] = "attribute_not_exists(pk) OR #st <> :running"
                lock_put["ExpressionAttributeValues"] = {":running": _s(ACTIVE)}
            else:
                lock_put["ConditionExpression"] = "execution_arn = :holder"
                lock_put["ExpressionAttributeValues"] = {":holder": _s(takeover_from)}
                del lock_put["ExpressionAttributeNames"]
            run_put = {
                "TableName": self._table,
                "Item": self._run_item(run),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
            try:
                ddb.transact_write_items(TransactItems=[{"Put": lock_put}, {"Put": run_put}])
                return run
            except ddb.exceptions.TransactionCanceledException:
                pass
            lock = self.lock(integration_id)
            if lock is None:
                continue  # released and removed meanwhile: try again
            if lock.execution_arn == execution_arn:
                existing = self.get(integration_id, lock.run_id)
                if existing is not None:
                    return existing  # Step Functions retried Begin: the first attempt got through
                continue
            if not lock.held:
                continue
            status = holder_status(lock.execution_arn)
            if status == "RUNNING":
                raise SyncAlreadyRunning(
                    f"a full sync of {integration_id} is already running (run {lock.run_id}, started "
                    f"{lock.started_at}, execution {lock.execution_arn.rsplit(':', 1)[-1]}). Wait for it to end "
                    f"(efficy-sync full-sync status {integration_id}) or cancel it "
                    f"(efficy-sync full-sync cancel {integration_id}), then start again."
                )
            end_stale(lock, status)
            takeover_from = lock.execution_arn
        raise SyncAlreadyRunning(f"could not take the full-sync lock of {integration_id}; try again")

    def _run_item(self, run: Run) -> dict[str, Any]:
        return {
            **_run_key(run.integration_id, run.run_id),
            "integration_id": _s(run.integration_id),
            "run_id": _s(run.run_id),
            "execution_arn": _s(run.execution_arn),
            "dry_run": {"BOOL": run.dry_run},
            "status": _s(run.status),
            "started_at": _s(run.started_at),
            "config_version": _n(run.config_version),
            "write_mode": _s(run.write_mode),
            "max_concurrency": _n(run.max_concurrency),
            "started_by": _s(run.started_by),
            "started_via": _s(run.started_via),
        }

    def lock(self, integration_id: str) -> Lock | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=_lock_key(integration_id), ConsistentRead=True)
            .get("Item")
        )
        return self._lock(item) if item else None

    def locks(self) -> list[Lock]:
        return [self._lock(item) for item in query_partition(self._table, LOCKS_PK)]

    @staticmethod
    def _lock(item: Mapping[str, Any]) -> Lock:
        plain = {k: _plain(v) for k, v in item.items()}
        return Lock(
            integration_id=plain["sk"],
            run_id=plain.get("run_id", ""),
            execution_arn=plain.get("execution_arn", ""),
            status=plain.get("status", ""),
            started_at=plain.get("started_at", ""),
            dry_run=bool(plain.get("dry_run", False)),
        )

    def release(self, integration_id: str, execution_arn: str) -> bool:
        """Release the lock if this execution holds it. False when it did not (already released, or taken over)."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_lock_key(integration_id),
                UpdateExpression="SET #st = :released, released_at = :now",
                ConditionExpression="execution_arn = :arn AND #st = :running",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":released": _s("released"),
                    ":now": _s(utc_now()),
                    ":arn": _s(execution_arn),
                    ":running": _s(ACTIVE),
                },
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def get(self, integration_id: str, run_id: str) -> Run | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=_run_key(integration_id, run_id), ConsistentRead=True)
            .get("Item")
        )
        return Run.from_item(item) if item else None

    def latest(self, integration_id: str) -> Run | None:
        items = (
            client("dynamodb")
            .query(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :run)",
                ExpressionAttributeValues={":pk": _s(f"FULLSYNC#{integration_id}"), ":run": _s("RUN#")},
                ScanIndexForward=False,
                Limit=1,
                ConsistentRead=True,
            )
            .get("Items", [])
        )
        return Run.from_item(items[0]) if items else None

    def history(self, integration_id: str, limit: int | None = None) -> list[Run]:
        """The integration's runs, newest first (run ids start with their start time); at most `limit`."""
        paginator = client("dynamodb").get_paginator("query")
        pages = paginator.paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :run)",
            ExpressionAttributeValues={":pk": _s(f"FULLSYNC#{integration_id}"), ":run": _s("RUN#")},
            ScanIndexForward=False,
            PaginationConfig={"MaxItems": limit} if limit else {},
        )
        runs = [Run.from_item(item) for page in pages for item in page.get("Items", [])]
        return runs[:limit] if limit else runs

    def prune(self, integration_id: str, keep: int | None = None) -> int:
        """Delete the ended runs beyond the newest `keep` (default RUN_HISTORY_MAX; their page records expire by
        TTL). A running run is never deleted. Returns how many were deleted."""
        keep = RUN_HISTORY_MAX if keep is None else keep
        ddb = client("dynamodb")
        pages = ddb.get_paginator("query").paginate(
            TableName=self._table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :run)",
            ExpressionAttributeValues={":pk": _s(f"FULLSYNC#{integration_id}"), ":run": _s("RUN#")},
            ExpressionAttributeNames={"#st": "status"},
            ProjectionExpression="pk, sk, #st",
            ScanIndexForward=False,
        )
        deleted = 0
        seen = 0
        for page in pages:
            for item in page.get("Items", []):
                seen += 1
                if seen <= keep or item.get("status", {}).get("S") == ACTIVE:
                    continue
                try:
                    ddb.delete_item(
                        TableName=self._table,
                        Key={"pk": item["pk"], "sk": item["sk"]},
                        ConditionExpression="#st <> :running",
                        ExpressionAttributeNames={"#st": "status"},
                        ExpressionAttributeValues={":running": _s(ACTIVE)},
                    )
                    deleted += 1
                except ddb.exceptions.ConditionalCheckFailedException:
                    continue
        return deleted

    def set_plan(self, run: Run, *, pages_total: int, persons_estimate: int, plan_key: str) -> None:
        client("dynamodb").update_item(
            TableName=self._table,
            Key=_run_key(run.integration_id, run.run_id),
            UpdateExpression="SET pages_total = :p, persons_estimate = :n, plan_key = :k, planned_at = :now",
            ExpressionAttributeValues={
                ":p": _n(pages_total),
                ":n": _n(persons_estimate),
                ":k": _s(plan_key),
                ":now": _s(utc_now()),
            },
        )

    def add(self, integration_id: str, run_id: str, counters: Mapping[str, int]) -> None:
        """Atomic ADDs on the run's counters (e.g. parked messages, re-enqueued changes)."""
        update = self._counter_update(counters)
        if update is None:
            return
        expression, names, values = update
        client("dynamodb").update_item(
            TableName=self._table,
            Key=_run_key(integration_id, run_id),
            UpdateExpression=expression,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def end(
        self,
        integration_id: str,
        run_id: str,
        status: str,
        *,
        error: Mapping[str, Any] | None = None,
        report: Mapping[str, Any] | None = None,
    ) -> bool:
        """Mark the run ended, once: False when something else ended it first (cancel, fail, sweeper)."""
        if status not in ENDED_STATUSES:
            raise ValueError(f"unknown end status {status!r}")
        names = {"#st": "status"}
        values: dict[str, Any] = {
            ":st": _s(status),
            ":now": _s(utc_now()),
            ":running": _s(ACTIVE),
            ":ttl": _n(expires_at()),
        }
        sets = ["#st = :st", "ended_at = :now", f"{TTL_ATTRIBUTE} = :ttl"]
        if error is not None:
            sets.append("#err = :err")
            names["#err"] = "error"
            values[":err"] = _s(json.dumps(dict(error), default=str)[:8000])
        if report is not None:
            sets.append("#rep = :rep")
            names["#rep"] = "report"
            values[":rep"] = _s(json.dumps(dict(report), default=str))
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_run_key(integration_id, run_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(pk) AND #st = :running",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        try:
            self.prune(integration_id)
        except Exception as exc:  # the history's bound is housekeeping: it must never fail the run's end
            logger.warning("could not prune the run history of %s: %s", integration_id, exc)
        return True
