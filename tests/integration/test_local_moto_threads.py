"""The local stack's moto server is safe for concurrent DynamoDB requests (local/moto_threads.py).

moto's server answers each request on its own thread; without the lock, a TransactWriteItems that deep-copies
a table while another thread writes to it fails with a 500 (`dictionary changed size during iteration`) or,
on rollback, silently drops the other thread's write. These tests start the local stack's own MotoServer in
this process (its patches are what is under test) on a table of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import botocore.config
import pytest
from efficy_sync_tools.local.aws import MotoServer

TABLE = "moto-threads"


def _clients(server: MotoServer, service: str) -> Callable[[], Any]:
    """Builds a client of `service` on the server, one per calling thread (no retries: a 500 must show)."""
    config = botocore.config.Config(retries={"max_attempts": 1}, max_pool_connections=20)

    def client() -> Any:
        return boto3.client(
            service,
            endpoint_url=server.endpoint,
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=config,
        )

    return client


@pytest.fixture
def ddb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MOTO_PORT", "0")  # MotoServer sets it; monkeypatch puts the old value back afterwards
    server = MotoServer().start()
    client = _clients(server, "dynamodb")

    client().create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
    )
    try:
        yield client
    finally:
        server.stop()


def hold_first_call(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> tuple[threading.Event, threading.Event]:
    """Makes the first call of `owner.name` (a moto backend method) wait inside until `release` is set; returns
    (inside, release): a second request that gets in meanwhile shows the backend is not serialised."""
    inside, release = threading.Event(), threading.Event()
    original = getattr(owner, name)

    def held(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not inside.is_set():
            inside.set()
            release.wait(10)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return inside, release


def second_got_in(call: Callable[[], None], inside: threading.Event, release: threading.Event) -> bool:
    """Runs `call` on a thread until it is held inside the backend (hold_first_call), then again on another:
    whether the second finished while the first was held. Both are let go and joined before it answers."""
    first = threading.Thread(target=call)
    first.start()
    assert inside.wait(10), "the first request never reached moto's backend"
    second = threading.Thread(target=call)
    second.start()
    second.join(1.0)
    got_in = not second.is_alive()
    release.set()
    first.join(10)
    second.join(10)
    return got_in


def _item(pk: str, sk: str, **extra: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}, **{k: {"S": v} for k, v in extra.items()}}


def test_a_request_waits_while_another_is_inside_the_dynamodb_backend(
    ddb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: a Scan is held inside moto's backend; a PutItem on another thread must not get in."""
    from moto.dynamodb.models import DynamoDBBackend

    inside, release = threading.Event(), threading.Event()
    original_scan = DynamoDBBackend.scan

    def held_scan(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
        if table_name == TABLE and not inside.is_set():
            inside.set()
            release.wait(10)
        return original_scan(self, table_name, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "scan", held_scan)
    results: dict[str, Any] = {}

    def run(name: str, call: Any) -> None:
        try:
            results[name] = call()
        except Exception as exc:  # reported by the assertions below
            results[name] = exc

    scanner = threading.Thread(target=run, args=("scan", lambda: ddb().scan(TableName=TABLE)))
    scanner.start()
    assert inside.wait(10), "the scan never reached moto's backend"
    writer = threading.Thread(target=run, args=("put", lambda: ddb().put_item(TableName=TABLE, Item=_item("a", "1"))))
    writer.start()
    writer.join(1.0)
    put_got_in = not writer.is_alive()
    release.set()
    scanner.join(10)
    writer.join(10)
    assert not put_got_in, "a PutItem ran while a Scan was inside moto's DynamoDB backend (no lock)"
    assert not isinstance(results.get("scan"), Exception), results
    assert not isinstance(results.get("put"), Exception), results
    assert ddb().get_item(TableName=TABLE, Key=_item("a", "1"))["Item"]["pk"] == {"S": "a"}


def test_concurrent_transactions_and_puts_neither_fail_nor_lose_writes(ddb: Any) -> None:
    """What the full sync does: TransactWriteItems (some cancelled by their condition) beside PutItems on one
    table. Every put that succeeded must still be there, and no request may fail with a 500."""
    seed = ddb()
    for start in range(0, 300, 25):
        seed.batch_write_item(
            RequestItems={
                TABLE: [{"PutRequest": {"Item": _item("seed", str(i), a="x" * 40)}} for i in range(start, start + 25)]
            }
        )
    errors: list[str] = []
    written: list[tuple[int, int]] = []

    def transactions(i: int) -> None:
        client = ddb()
        for n in range(12):
            try:
                client.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": TABLE, "Item": _item("tx", f"{i}-{n}")}},
                        {  # never holds: the transaction is cancelled and moto rolls the table back
                            "ConditionCheck": {
                                "TableName": TABLE,
                                "Key": _item("absent", "absent"),
                                "ConditionExpression": "attribute_exists(pk)",
                            }
                        },
                    ]
                )
            except client.exceptions.TransactionCanceledException:
                pass
            except Exception as exc:
                errors.append(repr(exc)[:200])

    def puts(i: int) -> None:
        client = ddb()
        for n in range(40):
            try:
                client.put_item(TableName=TABLE, Item=_item(f"w{i}", str(n)))
                written.append((i, n))
            except Exception as exc:
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=transactions, args=(i,)) for i in range(3)]
    threads += [threading.Thread(target=puts, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[:3]
    client = ddb()
    lost = [w for w in written if "Item" not in client.get_item(TableName=TABLE, Key=_item(f"w{w[0]}", str(w[1])))]
    assert not lost, f"{len(lost)} of {len(written)} successful PutItems were lost (a rollback restored an old copy)"
    assert len(written) == 120


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MOTO_PORT", "0")
    server = MotoServer().start()
    try:
        yield _clients(server, "ssm")
    finally:
        server.stop()


def test_a_create_if_absent_is_atomic_as_on_aws(ssm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The APSIS token's refresh lease is a PutParameter without Overwrite (apsis_tokens.py): while one such
    request is inside moto's SSM backend, another must not get in (moto checks and creates apart)."""
    from moto.ssm.models import SimpleSystemManagerBackend

    name = "/efficy-sync/apsis-token/abc-refresh"
    inside, release = hold_first_call(monkeypatch, SimpleSystemManagerBackend, "put_parameter")
    outcomes: list[str] = []

    def claim() -> None:
        try:
            ssm().put_parameter(Name=name, Value="x", Type="String", Overwrite=False)
            outcomes.append("created")
        except ssm().exceptions.ParameterAlreadyExists:
            outcomes.append("exists")

    assert not second_got_in(claim, inside, release), "a PutParameter ran while another was inside moto's SSM backend"
    assert sorted(outcomes) == ["created", "exists"]
