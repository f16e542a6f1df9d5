"""`efficy-sync health` reads the failed persons from the state table's sparse health index, never a scan.

In-process moto, with the state table built from template.yaml's definition (so the index the test queries is
the one the stack declares). The index is kept by the store's one write path (`put` replaces the whole item),
and `health --scan` indexes states stored before the index existed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import boto3
import pytest
from efficy_sync import aws
from efficy_sync.changes import ContactChange
from efficy_sync.config import load_config_text
from efficy_sync.state import PersonState
from efficy_sync.store.configs import ConfigStore
from efficy_sync.store.persons import HEALTH_PK, PersonStateStore, state_item
from efficy_sync_tools.cli import main
from efficy_sync_tools.commands._aws import EXIT_FOUND, EXIT_OK
from efficy_sync_tools.local import moto_speed
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

from tests.memory_store import MemoryPersonStateStore
from tests.support import ROOT, create_pk_sk_table, create_template_table

REGION = "eu-west-1"
STATE, CONFIG = "state", "config"
STORED = 100_000  # persons stored
FAILED = {  # person key -> error category of their last attempt
    **{k: "rejected_value" for k in (17, 4_242, 33_333, 50_001, 77_777, 99_998)},
    **{k: "permission" for k in (8, 12_345, 60_000)},
    81_234: "rate_limit",
}
SKIPPED = range(200_000, 200_040)  # skipped by design: listed only with --skipped


@pytest.fixture
def aws_env(in_process_aws: str) -> None:
    moto_speed.apply()  # moto's index queries sort every item; this makes them fast, with the same results
    create_template_table("StateTable", STATE, REGION)


def state(key: int, outcome: str | None = "synced", iid: str = "demo", **fields: Any) -> PersonState:
    return PersonState(
        integration_id=iid,
        person_key=str(key),
        last_outcome=outcome,
        change_stamp="2026-05-01T10:00:00",
        updated_at="2026-05-01T10:00:05Z",
        **fields,
    )


def failed(key: int, category: str, iid: str = "demo") -> PersonState:
    return state(key, "failed", iid, error_category=category, error_detail=f"APSIS said no ({category})")


def seed(states: Iterable[PersonState]) -> None:
    """Stores the items `put` would write (`state_item`), straight into moto's table: 100,000 puts through the
    API take minutes under moto (each request serialised, parsed and validated), and they are the test's data,
    not what it measures. moto's put keeps the index as DynamoDB would (an item without the keys is not in it)."""
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION]
    for s in states:
        table.put_item(STATE, state_item(s))


def seed_synced(keys: range) -> None:
    """Synced persons, in step (not indexed): one item built by `state_item`, copied with each person's key.

    moto's own put re-measures the whole item for every attribute it sets (seconds per 10,000 items), so the
    copies go straight into the table's storage: the stored item of the first key with `pk` and `doc`
    swapped. The last key is then put the ordinary way and must equal its copy, so the copies are exactly
    what `put` would have stored."""
    model = state_item(state(0))
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(STATE)
    stored = table.put_item(model)
    del table.items[stored.hash_key]  # the model (key 0) is no person of the test
    for k in keys:  # the storage: hash key -> {range key: item}
        item = Item.__new__(Item)  # moto's Item, built without re-measuring it at each attribute
        item.hash_key, item.range_key = DynamoType({"S": f"PERSON#demo#{k}"}), stored.range_key
        doc = DynamoType({"S": model["doc"]["S"].replace('"0"', f'"{k}"', 1)})
        item.attrs = LimitedSizeDict({**stored.attrs, "pk": item.hash_key, "doc": doc})
        table.items[item.hash_key] = {item.range_key: item}
    copied = table.items[item.hash_key][item.range_key]
    assert table.put_item(state_item(state(keys[-1]))) == copied  # the copy is what put would have written
    assert table.items[item.hash_key][item.range_key] is not copied


class ItemsRead:
    """Counts the items each DynamoDB call reads (what it is billed for), by operation, on the shared client."""

    def __init__(self) -> None:
        self.items: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        aws.client("dynamodb").meta.events.register("after-call.dynamodb", self._count)

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        name = model.name
        self.calls[name] += 1
        if name in ("Query", "Scan"):
            self.items[name] += parsed.get("ScannedCount", parsed.get("Count", 0))
        elif name == "GetItem":
            self.items[name] += 1 if parsed.get("Item") else 0
        elif name == "BatchGetItem":
            self.items[name] += sum(len(v) for v in parsed.get("Responses", {}).values())

    @property
    def total(self) -> int:
        return sum(self.items.values())


def cli_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """The names the CLI would take from the stack: tables, and the contact queue with its DLQ."""
    create_pk_sk_table(CONFIG, REGION)
    cfg = load_config_text((ROOT / "examples" / "demo.yaml").read_text())
    ConfigStore(CONFIG).put(cfg, applied_by="test", comment="health index")
    sqs = boto3.client("sqs", region_name=REGION)
    urls = {}
    for name in ("contact", "optout"):
        dlq = sqs.create_queue(QueueName=f"{name}-dlq.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        urls[name] = sqs.create_queue(
            QueueName=f"{name}.fifo",
            Attributes={
                "FifoQueue": "true",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "3"}),
            },
        )["QueueUrl"]
    for var, value in {
        "CONFIG_TABLE": CONFIG,
        "STATE_TABLE": STATE,
        "CONTACT_QUEUE_URL": urls["contact"],
        "OPTOUT_QUEUE_URL": urls["optout"],
        "STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:123456789012:stateMachine:none",
        "PAGES_BUCKET": "none",
    }.items():
        monkeypatch.setenv(var, value)
    return urls["contact"]


def health(capsys: pytest.CaptureFixture[str], *args: str, code: int = EXIT_FOUND) -> dict[str, Any]:
    """The JSON report; `code` is the exit expected (README "Exit codes": 6 while persons fail)."""
    assert main(["health", "demo", "--format", "json", *args]) == code
    return json.loads(capsys.readouterr().out)


def by_category(report: dict[str, Any]) -> dict[str, list[str]]:
    return {c["category"]: c["persons"] for c in report["categories"]}


def test_health_reads_only_the_failed_persons_of_100000(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = cli_env(monkeypatch)
    seed_synced(range(1, STORED + 1))
    seed(failed(k, name) for k, name in FAILED.items())  # these persons' last attempt failed
    seed(state(k, "skipped", skip_reason="ROBINSON equals '0' failed: value is '1'") for k in SKIPPED)
    seed(failed(k, "permission", iid="other") for k in range(1, 6))  # another integration's failures

    expected: dict[str, list[str]] = {}
    for k, name in sorted(FAILED.items()):
        expected.setdefault(name, []).append(str(k))
    read = ItemsRead()
    report = health(capsys)
    # The index only: no scan, and only the failures (plus the config's own items) are read.
    assert read.calls["Scan"] == 0
    assert read.items["Query"] == len(FAILED)
    assert read.total <= 30, read.items
    assert by_category(report) == expected
    assert report["failing_persons"] == len(FAILED) and report["persons_counted"] is False

    # --retry re-queues exactly the failed persons, from what the index returned: still no scan.
    read = ItemsRead()
    retried = health(capsys, "--retry", "failures")
    assert retried["retried"] == {"category": "failures", "persons": len(FAILED), "dlq_messages_removed": 0}
    assert read.calls["Scan"] == 0 and read.total <= 30, read.items
    sqs = boto3.client("sqs", region_name=REGION)
    queued: set[int] = set()
    while messages := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages"):
        for m in messages:
            change = ContactChange.model_validate_json(m["Body"])
            assert change.operation == "Resync" and change.integration_id == "demo"
            queued.add(change.person_key)
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    assert queued == set(FAILED)


def test_skipped_persons_on_request_and_a_fixed_person_leaves_the_report(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(monkeypatch)
    store = PersonStateStore(STATE)
    seed_synced(range(1, 101))
    seed([failed(17, "rejected_value"), failed(18, "permission")])
    seed(state(k, "skipped", skip_reason="ROBINSON equals '0' failed: value is '1'") for k in SKIPPED)

    report = health(capsys)
    assert by_category(report) == {"rejected_value": ["17"], "permission": ["18"]}
    assert report["skipped_listed"] is False
    assert main(["health", "demo"]) == EXIT_FOUND
    assert "persons skipped by design (sync conditions, no key) not listed: add --skipped" in capsys.readouterr().out

    read = ItemsRead()
    with_skipped = health(capsys, "--skipped")
    assert by_category(with_skipped)["conditions"] == [str(k) for k in SKIPPED]
    assert read.calls["Scan"] == 0 and read.items["Query"] == 2 + len(SKIPPED)

    # The person syncs again: the same write takes them out of the index, and out of the next report.
    stored = store.get("demo", 17)
    store.put(stored.model_copy(update={"last_outcome": "synced", "error_category": None, "error_detail": None}))
    assert by_category(health(capsys)) == {"permission": ["18"]}


def test_the_exit_code_says_whether_an_operator_is_needed(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A monitoring script runs `health` and alerts on the exit code: it was 0 with failing persons and full
    dead-letter queues. 6 (as reconcile's drift) while a person fails or a DLQ holds a message, 0 once clean."""
    queue = cli_env(monkeypatch)
    seed_synced(range(1, 11))
    seed([state(11, "skipped", skip_reason="ROBINSON equals '0' failed: value is '1'")])
    assert health(capsys, "--skipped", code=EXIT_OK)["failing_persons"] == 0  # skipped by design: no problem

    seed([failed(17, "rejected_value")])
    assert main(["health", "demo"]) == EXIT_FOUND
    assert "rejected_value" in capsys.readouterr().out
    store = PersonStateStore(STATE)
    fixed = store.get("demo", 17).model_copy(update={"last_outcome": "synced", "error_category": None})
    store.put(fixed.model_copy(update={"error_detail": None}))
    assert health(capsys, code=EXIT_OK)["categories"] == []

    # a message of another integration in the opt-out DLQ: no failing person of ours, but the stack needs a look
    sqs = boto3.client("sqs", region_name=REGION)
    policy = sqs.get_queue_attributes(QueueUrl=queue.replace("contact", "optout"), AttributeNames=["RedrivePolicy"])
    dlq_arn = json.loads(policy["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"]
    dlq = sqs.get_queue_url(QueueName=dlq_arn.rsplit(":", 1)[1])["QueueUrl"]
    sqs.send_message(QueueUrl=dlq, MessageBody="{}", MessageGroupId="other", MessageDeduplicationId="d-1")
    report = health(capsys)
    assert report["failing_persons"] == 0 and report["dead_letter_queues"]["optout"] == 1


@pytest.fixture(params=["dynamodb", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryPersonStateStore()
    else:
        request.getfixturevalue("aws_env")
        yield PersonStateStore(STATE)


def keys(states: list[PersonState]) -> list[str]:
    return [s.person_key for s in states]


def test_every_outcome_write_keeps_the_index(store: Any) -> None:
    store.put(failed(1, "rejected_value"))
    store.put(state(2, "skipped", skip_reason="the person has no valid K_CONTACT"))
    store.put(state(3, "synced", error_category="email_conflict", error_detail="held back"))  # a failure too
    store.put(state(4, "synced"))
    store.put(state(5, "deleted"))
    store.put(failed(6, "permission", iid="other"))
    assert keys(store.issues("demo")) == ["1", "3"]
    assert keys(store.issues("demo", ("skipped",))) == ["2"]
    assert keys(store.issues("demo", ("failure", "skipped"))) == ["1", "2", "3"]

    # Fixed: each rewrite of the state (synced, skipped, conflict cleared) moves it in or out of the index.
    current = store.get("demo", 1)
    store.put(current.model_copy(update={"last_outcome": "synced", "error_category": None, "error_detail": None}))
    current = store.get("demo", 3)
    store.put(current.model_copy(update={"error_category": None, "error_detail": None}))
    current = store.get("demo", 4)
    store.put(current.model_copy(update={"last_outcome": "failed", "error_category": "rate_limit"}))
    assert keys(store.issues("demo")) == ["4"]
    current = store.get("demo", 2)
    store.put(current.model_copy(update={"last_outcome": "synced", "skip_reason": None}))
    assert keys(store.issues("demo", ("skipped",))) == []
    assert keys(store.issues("other")) == ["6"]


def test_scan_indexes_states_stored_before_the_index(
    aws_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(monkeypatch)
    ddb = aws.client("dynamodb")
    old_failed = state_item(failed(1, "permission"))
    stale_synced = state_item(state(2))
    for item, drop in ((old_failed, True), (stale_synced, False)):
        if drop:  # as a version without the index wrote it
            item = {k: v for k, v in item.items() if not k.startswith("health_")}
        else:  # index keys left on an item that is in step (e.g. written by hand)
            item = {**item, **{k: v for k, v in state_item(failed(2, "permission")).items() if k.startswith("health")}}
        ddb.put_item(TableName=STATE, Item=item)
    store = PersonStateStore(STATE)
    assert keys(store.issues("demo")) == ["2"]

    assert main(["health", "demo", "--format", "json", "--scan"]) == EXIT_FOUND
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert by_category(report) == {"permission": ["1"]}
    assert report["persons_counted"] is True and report["persons"]["known"] == 2
    assert "indexed 2 stored state(s) the health index lacked" in err
    assert keys(store.issues("demo")) == ["1"]
    assert (
        HEALTH_PK not in ddb.get_item(TableName=STATE, Key={"pk": stale_synced["pk"], "sk": stale_synced["sk"]})["Item"]
    )
    assert by_category(health(capsys)) == {"permission": ["1"]}
