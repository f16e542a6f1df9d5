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

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..aws import client
from ..observability import logger  # the PII-scrubbing logger: one logging path

LOCKS_PK = "FULLSYNC#LOCKS"
COUNTER_PREFIX = "c:"
ACTIVE = "running"
ENDED_STATUSES = ("succeeded", "failed", "cancelled", "timed_out")
#: Step Functions execution status -> the run status it leaves behind when nobody else ended the run
STATUS_BY_EXECUTION = {"ABORTED": "cancelled", "TIMED_OUT": "timed_out", "FAILED": "failed", "SUCCEEDED": "succeeded"}
#: an ended run (and its page records) stays this long in the history; the state table's TTL removes it then
RUN_RETENTION_DAYS = 180
#: at most this many ended runs per integration are kept, whatever their age (a schedule could start many)
RUN_HISTORY_MAX = 100
#: the state table's TTL attribute (template.yaml, StateTable.TimeToLiveSpecification)
TTL_ATTRIBUTE = "expires_at"
#: how a run was started: by `efficy-sync full-sync start` (who: the caller's AWS identity) or directly on Step
#: Functions (console, `aws stepfunctions start-execution`; who: the execution's name)
STARTED_VIA_CLI = "cli"
STARTED_VIA_STEPFUNCTIONS = "stepfunctions"


class SyncAlreadyRunning(Exception):
    """Another execution holds the integration's lock. The state machine matches this class name."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def expires_at(now: float | None = None, days: int = RUN_RETENTION_DAYS) -> int:
    """The TTL value (epoch seconds) of a record kept `days` from now."""
    return int((time.time() if now is None else now) + days * 86400)


def new_run_id(execution_arn: str, now: datetime | None = None) -> str:
    """Sortable by start time; the suffix tells two runs of the same second apart."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{hashlib.sha256(execution_arn.encode()).hexdigest()[:6]}"


# ---- DynamoDB values ----------------------------------------------------------------------------------------
def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int | float) -> dict[str, str]:
    return {"N": str(value)}


def _plain(attr: dict[str, Any]) -> Any:
    ((kind, value),) = attr.items()
    if kind == "S":
        return value
    if kind == "N":
        number = float(value)
        return int(number) if number.is_integer() else number
    if kind == "BOOL":
        return value
    if kind == "NULL":
        return None
    if kind == "SS":
        return set(value)
    raise ValueError(f"unexpected DynamoDB type {kind}")


def _run_key(integration_id: str, run_id: str) -> dict[str, Any]:
    return {"pk": _s(f"FULLSYNC#{integration_id}"), "sk": _s(f"RUN#{run_id}")}


def _lock_key(integration_id: str) -> dict[str, Any]:
    return {"pk": _s(LOCKS_PK), "sk": _s(integration_id)}


def _page_key(integration_id: str, run_id: str, page: int) -> dict[str, Any]:
    return {"pk": _s(f"FULLSYNC#{integration_id}#{run_id}"), "sk": _s(f"PAGE#{page:06d}")}


# ---- records --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lock:
    integration_id: str
    run_id: str
    execution_arn: str
    status: str  # running | released
    started_at: str = ""
    dry_run: bool = False  # a dry run holds the lock but parks nothing: it writes nothing either

    @property
    def held(self) -> bool:
        return self.status == ACTIVE


@dataclass
class Run:
    integration_id: str
    run_id: str
    execution_arn: str
    dry_run: bool
    status: str
    started_at: str
    config_version: int = 0
    write_mode: str = "diff"
    max_concurrency: int = 5
    started_by: str = ""  # the CLI user's AWS identity (ARN), or the execution's name for a direct start
    started_via: str = ""  # STARTED_VIA_CLI | STARTED_VIA_STEPFUNCTIONS ("" for runs recorded before both existed)
    ended_at: str | None = None
    planned_at: str | None = None
    pages_total: int | None = None
    persons_estimate: int | None = None
    plan_key: str | None = None
    error: dict[str, Any] | None = None
    report: dict[str, Any] | None = None
    counters: dict[str, int] = field(default_factory=dict)
    pages_counted: set[int] = field(default_factory=set)

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def step_payload(self) -> dict[str, Any]:
        """What Begin hands to the later steps (kept small: it travels through every state's input)."""
        return {
            "run_id": self.run_id,
            "integration_id": self.integration_id,
            "dry_run": self.dry_run,
            "execution_arn": self.execution_arn,
            "config_version": self.config_version,
            "write_mode": self.write_mode,
            "max_concurrency": self.max_concurrency,
        }

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> Run:
        plain = {k: _plain(v) for k, v in item.items()}
        return cls(
            integration_id=plain["integration_id"],
            run_id=plain["run_id"],
            execution_arn=plain.get("execution_arn", ""),
            dry_run=bool(plain.get("dry_run", False)),
            status=plain.get("status", ACTIVE),
            started_at=plain.get("started_at", ""),
            config_version=int(plain.get("config_version", 0)),
            write_mode=plain.get("write_mode", "diff"),
            max_concurrency=int(plain.get("max_concurrency", 5)),
            started_by=plain.get("started_by", ""),
            started_via=plain.get("started_via", ""),
            ended_at=plain.get("ended_at"),
            planned_at=plain.get("planned_at"),
            pages_total=plain.get("pages_total"),
            persons_estimate=plain.get("persons_estimate"),
            plan_key=plain.get("plan_key"),
            error=json.loads(plain["error"]) if plain.get("error") else None,
            report=json.loads(plain["report"]) if plain.get("report") else None,
            counters={
                k[len(COUNTER_PREFIX) :]: int(v)
                for k, v in plain.items()
                if k.startswith(COUNTER_PREFIX) and isinstance(v, int | float)
            },
            pages_counted={int(p) for p in plain.get("pages_counted", set())},
        )


@dataclass(frozen=True)
class PageRecord:
    page: int
    status: str  # done | failing
    attempts: int = 0
    persons: int = 0
    last_error: str | None = None


# ---- the store --------------------------------------------------------------------------------------------
class RunStore:
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
        end_stale: Callable[[Lock, str | None], None],
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
        pages = (
            client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s(LOCKS_PK)},
                ConsistentRead=True,
            )
        )
        return [self._lock(item) for page in pages for item in page.get("Items", [])]

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

    @staticmethod
    def _counter_update(counters: Mapping[str, int]) -> tuple[str, dict[str, str], dict[str, Any]] | None:
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        parts = []
        for i, (name, value) in enumerate(sorted(counters.items())):
            if not value:
                continue
            names[f"#c{i}"] = COUNTER_PREFIX + name
            values[f":c{i}"] = _n(value)
            parts.append(f"#c{i} :c{i}")
        if not parts:
            return None
        return "ADD " + ", ".join(parts), names, values

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

    def add_once(self, integration_id: str, run_id: str, token: str, counters: Mapping[str, int]) -> bool:
        """Like `add`, but only the first call with `token` counts (a step Step Functions runs again after a
        lost reply must not count twice). The tokens are kept in a string set beside the counted pages."""
        return bool(counters) and self._add_counted(integration_id, run_id, "tokens_counted", token, counters)

    def _add_counted(
        self, integration_id: str, run_id: str, counted: str, token: str, counters: Mapping[str, int]
    ) -> bool:
        """Adds `counters` unless the string set `counted` already holds `token`, and records it there: one
        conditional update of one item, so no transaction is needed. False when it was counted before."""
        update = self._counter_update(counters)
        if update is None:
            return False
        expression, names, values = update
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_run_key(integration_id, run_id),
                UpdateExpression=f"{expression}, #counted :token_set",
                ConditionExpression="attribute_exists(pk) AND NOT contains(#counted, :token)",
                ExpressionAttributeNames={**names, "#counted": counted},
                ExpressionAttributeValues={**values, ":token_set": {"SS": [token]}, ":token": _s(token)},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    # ---- pages --------------------------------------------------------------------------------------
    def page_done(self, integration_id: str, run_id: str, page: int, persons: int, counters: Mapping[str, int]) -> bool:
        """Add the page's counters to the run, once: False when the page was already counted (Step Functions may
        run a page again after a lost reply)."""
        counts = {**counters, "pages_done": 1}
        if not self._add_counted(integration_id, run_id, "pages_counted", str(page), counts):
            return False
        client("dynamodb").update_item(
            TableName=self._table,
            Key=_page_key(integration_id, run_id, page),
            UpdateExpression=f"SET #st = :done, persons = :persons, done_at = :now, {TTL_ATTRIBUTE} = :ttl "
            "ADD attempts :one",
            ExpressionAttributeNames={"#st": "status"},
            ExpressionAttributeValues={
                ":done": _s("done"),
                ":persons": _n(persons),
                ":now": _s(utc_now()),
                ":one": _n(1),
                ":ttl": _n(expires_at()),
            },
        )
        return True

    def page_failed(self, integration_id: str, run_id: str, page: int, error: str) -> None:
        """Count a failed attempt; Step Functions decides whether it runs the page again."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_page_key(integration_id, run_id, page),
                UpdateExpression=f"SET #st = :failing, last_error = :err, failed_at = :now, {TTL_ATTRIBUTE} = :ttl "
                "ADD attempts :one",
                ConditionExpression="attribute_not_exists(pk) OR #st <> :done",
                ExpressionAttributeNames={"#st": "status"},
                ExpressionAttributeValues={
                    ":failing": _s("failing"),
                    ":done": _s("done"),
                    ":err": _s(error[:1000]),
                    ":now": _s(utc_now()),
                    ":one": _n(1),
                    ":ttl": _n(expires_at()),
                },
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return  # a later attempt already finished it

    def pages(self, integration_id: str, run_id: str) -> dict[int, PageRecord]:
        pages = (
            client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=self._table,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": _s(f"FULLSYNC#{integration_id}#{run_id}")},
                ConsistentRead=True,
            )
        )
        records: dict[int, PageRecord] = {}
        for page in pages:
            for item in page.get("Items", []):
                plain = {k: _plain(v) for k, v in item.items()}
                number = int(plain["sk"].split("#", 1)[1])
                records[number] = PageRecord(
                    page=number,
                    status=plain.get("status", ""),
                    attempts=int(plain.get("attempts", 0)),
                    persons=int(plain.get("persons", 0)),
                    last_error=plain.get("last_error"),
                )
        return records

    # ---- parking support ------------------------------------------------------------------------------
    def lock_condition(self, integration_id: str, run_id: str) -> dict[str, Any]:
        """A TransactWriteItems ConditionCheck: the run still holds the integration's lock."""
        return {
            "ConditionCheck": {
                "TableName": self._table,
                "Key": _lock_key(integration_id),
                "ConditionExpression": "run_id = :rid AND #st = :running",
                "ExpressionAttributeNames": {"#st": "status"},
                "ExpressionAttributeValues": {":rid": _s(run_id), ":running": _s(ACTIVE)},
            }
        }

    def counter_update(self, integration_id: str, run_id: str, counters: Mapping[str, int]) -> dict[str, Any]:
        """A TransactWriteItems Update that adds to the run's counters."""
        update = self._counter_update(counters)
        assert update is not None
        expression, names, values = update
        return {
            "Update": {
                "TableName": self._table,
                "Key": _run_key(integration_id, run_id),
                "UpdateExpression": expression,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }
