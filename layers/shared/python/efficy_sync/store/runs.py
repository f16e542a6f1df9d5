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
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ..aws import client
from ..observability import logger  # the PII-scrubbing logger: one logging path
from .dynamo import from_item, query_all, to_item
from .run_counters import RunCounters
from .run_records import (
    ACTIVE,
    COUNTER_PREFIX,
    ENDED_STATUSES,
    LOCKS_PK,
    RUN_HISTORY_MAX,
    TTL_ATTRIBUTE,
    Lock,
    Run,
    SyncAlreadyRunning,
    _lock_key,
    _run_key,
    execution_ended,
    expires_at,
    new_run_id,
    utc_now,
)


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
                    **to_item(
                        {
                            "run_id": run.run_id,
                            "execution_arn": execution_arn,
                            "status": ACTIVE,
                            "started_at": run.started_at,
                            "dry_run": dry_run,
                        }
                    ),
                },
                "ExpressionAttributeNames": {"#st": "status"},
            }
            if takeover_from is None:
                lock_put["ConditionExpression"] = "attribute_not_exists(pk) OR #st <> :running"
                lock_put["ExpressionAttributeValues"] = to_item({":running": ACTIVE})
            else:
                lock_put["ConditionExpression"] = "execution_arn = :holder"
                lock_put["ExpressionAttributeValues"] = to_item({":holder": takeover_from})
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
            if not execution_ended(status):
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
        fields = (
            "integration_id",
            "run_id",
            "execution_arn",
            "dry_run",
            "status",
            "started_at",
            "config_version",
            "write_mode",
            "max_concurrency",
            "started_by",
            "started_via",
        )
        return {**_run_key(run.integration_id, run.run_id), **to_item({f: getattr(run, f) for f in fields})}

    def lock(self, integration_id: str) -> Lock | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=_lock_key(integration_id), ConsistentRead=True)
            .get("Item")
        )
        return self._lock(from_item(item)) if item else None

    def locks(self) -> list[Lock]:
        return [self._lock(item) for item in query_all(self._table, "pk = :pk", {":pk": LOCKS_PK}, consistent=True)]

    @staticmethod
    def _lock(plain: Mapping[str, Any]) -> Lock:
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
                ExpressionAttributeValues=to_item(
                    {":released": "released", ":now": utc_now(), ":arn": execution_arn, ":running": ACTIVE}
                ),
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

    def is_active(self, integration_id: str, run_id: str) -> bool:
        """Whether the run is still running: its status alone (a page asks before every chunk of persons, and the
        whole record, with its counted-page sets, grows with the run)."""
        item = (
            client("dynamodb")
            .get_item(
                TableName=self._table,
                Key=_run_key(integration_id, run_id),
                ConsistentRead=True,
                ProjectionExpression="#st",
                ExpressionAttributeNames={"#st": "status"},
            )
            .get("Item")
        )
        return bool(item) and item.get("status", {}).get("S", ACTIVE) == ACTIVE  # as Run.from_item reads it

    def latest(self, integration_id: str) -> Run | None:
        return next(iter(self.history(integration_id, limit=1)), None)

    def history(self, integration_id: str, limit: int | None = None) -> list[Run]:
        """The integration's runs, newest first (run ids start with their start time); at most `limit`."""
        return [Run.from_plain(item) for item in self._runs(integration_id, limit=limit)]

    def _runs(self, integration_id: str, **options: Any) -> Iterator[dict[str, Any]]:
        """The run items of the integration, newest first, read consistently."""
        return query_all(
            self._table,
            "pk = :pk AND begins_with(sk, :run)",
            {":pk": f"FULLSYNC#{integration_id}", ":run": "RUN#"},
            forward=False,
            consistent=True,
            **options,
        )

    def prune(self, integration_id: str, keep: int | None = None) -> int:
        """Delete the ended runs beyond the newest `keep` (default RUN_HISTORY_MAX; their page records expire by
        TTL). A running run is never deleted. Returns how many were deleted."""
        keep = RUN_HISTORY_MAX if keep is None else keep
        ddb = client("dynamodb")
        deleted = 0
        items = self._runs(integration_id, names={"#st": "status"}, projection="pk, sk, #st")
        for seen, item in enumerate(items, start=1):
            if seen <= keep or item.get("status") == ACTIVE:
                continue
            try:
                ddb.delete_item(
                    TableName=self._table,
                    Key=to_item({"pk": item["pk"], "sk": item["sk"]}),
                    ConditionExpression="#st <> :running",
                    ExpressionAttributeNames={"#st": "status"},
                    ExpressionAttributeValues=to_item({":running": ACTIVE}),
                )
                deleted += 1
            except ddb.exceptions.ConditionalCheckFailedException:
                continue
        return deleted

    def set_plan(
        self, run: Run, *, pages_total: int, persons_estimate: int, plan_key: str, last_key: int | None = None
    ) -> None:
        values: dict[str, Any] = {":p": pages_total, ":n": persons_estimate, ":k": plan_key, ":now": utc_now()}
        last = ", last_key = :last" if last_key is not None else ""
        if last_key is not None:
            values[":last"] = last_key
        client("dynamodb").update_item(
            TableName=self._table,
            Key=_run_key(run.integration_id, run.run_id),
            UpdateExpression=f"SET pages_total = :p, persons_estimate = :n, plan_key = :k, planned_at = :now{last} "
            "REMOVE waiting_on, waiting_since",
            ExpressionAttributeValues=to_item(values),
        )

    def plan_waiting(self, run: Run, error: str) -> None:
        """The Plan step failed on an outage and Step Functions will retry it: what on, since when, attempts."""
        client("dynamodb").update_item(
            TableName=self._table,
            Key=_run_key(run.integration_id, run.run_id),
            UpdateExpression="SET waiting_on = :e, waiting_since = if_not_exists(waiting_since, :now) ADD #c :one",
            ExpressionAttributeNames={"#c": f"{COUNTER_PREFIX}plan_retries"},
            ExpressionAttributeValues=to_item({":e": error, ":now": utc_now(), ":one": 1}),
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
        values: dict[str, Any] = {":st": status, ":now": utc_now(), ":running": ACTIVE, ":ttl": expires_at()}
        sets = ["#st = :st", "ended_at = :now", f"{TTL_ATTRIBUTE} = :ttl"]
        if error is not None:
            sets.append("#err = :err")
            names["#err"] = "error"
            values[":err"] = json.dumps(dict(error), default=str)[:8000]
        if report is not None:
            sets.append("#rep = :rep")
            names["#rep"] = "report"
            values[":rep"] = json.dumps(dict(report), default=str)
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_run_key(integration_id, run_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_exists(pk) AND #st = :running",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_item(values),
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        try:
            self.prune(integration_id)
        except Exception as exc:  # the history's bound is housekeeping: it must never fail the run's end
            logger.warning("could not prune the run history of %s: %s", integration_id, exc)
        return True
