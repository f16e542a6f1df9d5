"""The full-sync run records of the STATE table (their items are described in `runs`): the lock, the run, a
page record, and their keys."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .dynamo import from_item, key

LOCKS_PK = "FULLSYNC#LOCKS"
COUNTER_PREFIX = "c:"
ACTIVE = "running"
ENDED_STATUSES = ("succeeded", "failed", "cancelled", "timed_out", "halted")  # halted: breaker.py
#: Step Functions execution status -> the run status it leaves behind when nobody else ended the run
STATUS_BY_EXECUTION = {"ABORTED": "cancelled", "TIMED_OUT": "timed_out", "FAILED": "failed", "SUCCEEDED": "succeeded"}


def execution_ended(status: str | None) -> bool:
    """Whether an execution in `status` (None: there is no such execution) can no longer act: only a terminal
    status says so. RUNNING and PENDING_REDRIVE (an admin's redrive may resume it) hold the run and its lock;
    so does a status this code does not know yet, until a later look finds it ended."""
    return status is None or status in STATUS_BY_EXECUTION


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
    """Sortable by start time to the millisecond: the history reads runs newest first by this id, and a run that
    began in the same second as the one before it (a dry run of a small CRM, then the run it confirmed) sorted
    by the suffix alone, so `--allow-removals-up-to` judged against the wrong run. The suffix (from the
    execution) keeps ids unique."""
    moment = now or datetime.now(UTC)
    stamp = f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}Z"
    return f"{stamp}-{hashlib.sha256(execution_arn.encode()).hexdigest()[:6]}"


# ---- keys ----------------------------------------------------------------------------------------------------
def _run_key(integration_id: str, run_id: str) -> dict[str, Any]:
    return key(f"FULLSYNC#{integration_id}", f"RUN#{run_id}")


def _lock_key(integration_id: str) -> dict[str, Any]:
    return key(LOCKS_PK, integration_id)


def _page_key(integration_id: str, run_id: str, page: int) -> dict[str, Any]:
    return key(f"FULLSYNC#{integration_id}#{run_id}", f"PAGE#{page:06d}")


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
    #: the K_CONTACT at the plan's last index: where it sits when Seams runs says how many deletes came before it
    last_key: int | None = None
    plan_key: str | None = None
    waiting_on: str | None = None  # the error a retried Plan step waits out (cleared once planned)
    waiting_since: str | None = None
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
        """The run of a DynamoDB item."""
        return cls.from_plain(from_item(item))

    @classmethod
    def from_plain(cls, plain: Mapping[str, Any]) -> Run:
        """The run of an item already read as Python (store.dynamo.from_item, query_all)."""
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
            last_key=int(plain["last_key"]) if plain.get("last_key") is not None else None,
            plan_key=plain.get("plan_key"),
            waiting_on=plain.get("waiting_on"),
            waiting_since=plain.get("waiting_since"),
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
