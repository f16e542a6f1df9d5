"""A full sync whose Plan step waits out an Efficy outage says so in `full-sync status`.

Step Functions retries the Plan step on EfficyUnavailable for minutes (statemachines/full_sync.asl.json); the
status used to show "planning... 0%" all along, the reason only in the logs. The real Plan step (FullSync.plan)
reads the Efficy simulator over HTTP through the real client; moto in-process holds the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from efficy_sync.clients.efficy import EfficyClient
from efficy_sync.clients.errors import EfficyUnavailable
from efficy_sync.config import config_from_dict
from efficy_sync.fullsync.lifecycle import FullSync
from efficy_sync.fullsync.parking import ParkingLot
from efficy_sync.fullsync.runs import RunStore
from efficy_sync.fullsync.tags import QueryMembers
from efficy_sync.fullsync.wiring import S3Plans
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import PersonStateStore
from efficy_sync.store.removals import HeldRemovals, RemovalBreaker
from efficy_sync_tools.commands.full_sync import _status_document, progress_lines
from efficy_sync_tools.sims.efficy import EfficySimulator

from tests.integration.test_diff_calls import FAST, person
from tests.support import create_pk_sk_table

ROOT = Path(__file__).resolve().parents[2]
ARN = "arn:aws:states:eu-west-1:123456789012:execution:full-sync:plan-waits"


@pytest.fixture
def full_sync(in_process_aws: str, sim: EfficySimulator) -> Iterator[FullSync]:
    create_pk_sk_table("config")
    create_pk_sk_table("state")
    boto3.client("s3").create_bucket(Bucket="plans", CreateBucketConfiguration={"LocationConstraint": in_process_aws})
    queue = boto3.client("sqs").create_queue(QueueName="c.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    data = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    data.setdefault("tags", {})["queries"] = []  # the count alone: the query plan's reads fail the same way
    ConfigStore("config").put(config_from_dict(data), applied_by="test")
    sim.upsert_persons([person(k) for k in range(1, 31)])
    runs = RunStore("state")

    def no_apsis(cfg: Any) -> Any:
        raise AssertionError("planning does not call APSIS One")

    yield FullSync(
        configs=ConfigStore("config"),
        runs=runs,
        parking=ParkingLot("state", runs),
        states=PersonStateStore("state"),
        members=QueryMembers("state"),
        queue_url=queue,
        plans=S3Plans("plans"),
        execution_status=lambda arn: "RUNNING",
        efficy_for=lambda cfg: EfficyClient(sim.url, sim.api_key, policy=FAST),
        apsis_for=no_apsis,
        held=HeldRemovals("state"),
        removal_breaker=RemovalBreaker("state"),
    )


def test_status_says_what_the_plan_step_waits_on_and_forgets_it_once_planned(
    full_sync: FullSync, sim: EfficySimulator
) -> None:
    run = full_sync.begin({"integration_id": "demo"}, ARN)
    sim.add_fault(path_regex=".", status=503)
    for _ in range(2):  # two attempts of the step, as Step Functions retries it
        with pytest.raises(EfficyUnavailable):
            full_sync.plan(run)

    waiting = full_sync.runs.get("demo", run["run_id"])
    assert waiting.waiting_on == "EfficyUnavailable" and waiting.counters["plan_retries"] == 2
    bar = progress_lines(waiting, 0)[1]
    assert "planning..." in bar and "waiting: EfficyUnavailable since" in bar and "2 failed attempts" in bar

    sim.clear_faults()
    planned = full_sync.plan(run)
    done = full_sync.runs.get("demo", run["run_id"])
    assert planned.pages >= 1 and done.pages_total == planned.pages and done.persons_estimate == 30
    assert done.waiting_on is None and done.waiting_since is None
    assert "waiting" not in progress_lines(done, 0)[1]


def test_the_json_status_names_the_wait_only_while_planning(
    full_sync: FullSync, sim: EfficySimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import efficy_sync_tools.commands.full_sync as command

    # the document's other parts read the deployed stack's tables: not the point here
    monkeypatch.setattr(command, "_parked", lambda integration_id: 0)
    monkeypatch.setattr(command, "held_document", lambda table, integration_id: {})
    monkeypatch.setattr(command, "_setup", lambda: type("Setup", (), {"state_table": "state"})())
    run = full_sync.begin({"integration_id": "demo"}, ARN)
    sim.add_fault(path_regex=".", status=503)
    with pytest.raises(EfficyUnavailable):
        full_sync.plan(run)
    assert _status_document(full_sync.runs.get("demo", run["run_id"]))["waiting_on"] == "EfficyUnavailable"
    sim.clear_faults()
    full_sync.plan(run)
    assert _status_document(full_sync.runs.get("demo", run["run_id"]))["waiting_on"] is None
