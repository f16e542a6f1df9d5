"""Builds a `FullSync` from the deployment's settings: the one place that picks its stores, API clients, plan
bucket and Step Functions access. The full-sync Lambdas and the CLI call `build_full_sync()`; tests build a
`FullSync` with what they need instead (moto tables, a dict of execution statuses, the simulators' clients)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from ..aws import client
from ..connections import apsis_client, efficy_client
from ..settings import settings
from ..store.configs import ConfigStore
from ..store.persons import PersonStateStore
from ..store.removals import HeldRemovals, RemovalBreaker
from .lifecycle import FullSync
from .parking import ParkingLot
from .runs import RunStore
from .tags import QueryMembers


@dataclass(frozen=True)
class S3Plans:
    """Page descriptors as one JSON array per run in the pages bucket (the Distributed Map's ItemReader)."""

    bucket: str

    def put(self, key: str, descriptors: list[dict[str, Any]]) -> None:
        client("s3").put_object(
            Bucket=self.bucket, Key=key, Body=json.dumps(descriptors).encode(), ContentType="application/json"
        )

    def get(self, key: str) -> list[dict[str, Any]] | None:
        """What `put` stored under `key`, or None when there is nothing (a plan made before it was written)."""
        s3 = client("s3")
        try:
            body = s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None
        return cast(list[dict[str, Any]], json.loads(body))


def describe_execution(execution_arn: str) -> str | None:
    """RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED | PENDING_REDRIVE, or None when there is no such
    execution."""
    sfn = client("stepfunctions")
    try:
        return cast(str, sfn.describe_execution(executionArn=execution_arn)["status"])
    except (sfn.exceptions.ExecutionDoesNotExist, sfn.exceptions.InvalidArn):
        return None


def build_full_sync() -> FullSync:
    """The deployment's full sync, from the environment's settings (tables, queue, bucket)."""
    s = settings()
    runs = RunStore(s.state_table)
    return FullSync(
        # Not cached: Begin must snapshot the config the admin applied just before starting.
        configs=ConfigStore(s.config_table, check_version=True),
        runs=runs,
        parking=ParkingLot(s.state_table, runs),
        states=PersonStateStore(s.state_table),
        members=QueryMembers(s.state_table),
        queue_url=s.contact_queue_url,
        plans=S3Plans(s.pages_bucket),
        execution_status=describe_execution,
        efficy_for=efficy_client,
        apsis_for=apsis_client,
        held=HeldRemovals(s.state_table),
        removal_breaker=RemovalBreaker(s.state_table),
        budget_table=s.state_table,
    )
