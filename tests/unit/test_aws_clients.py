"""The shared boto3 clients: one per service, and one set of exception classes however many threads start at once.

botocore builds `client.exceptions` on first access without a lock; two page threads touching it together got
two sets of classes, and a refused conditional write escaped `except ddb.exceptions.ConditionalCheckFailed...`
(CI at stop 42). The factory is slowed here so the race happens every time on code that has it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.errorfactory import ClientExceptionsFactory
from efficy_sync import aws


@pytest.fixture
def slow_exception_factory(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    real = ClientExceptionsFactory._create_client_exceptions

    def slow(self: Any, service_model: Any) -> Any:
        time.sleep(0.05)
        return real(self, service_model)

    monkeypatch.setattr(ClientExceptionsFactory, "_create_client_exceptions", slow)
    # a fresh session too: botocore caches the classes per session once built
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    aws.reset_clients()
    yield
    aws.reset_clients()


@pytest.mark.parametrize("make", [aws.client, aws.brief_client])
def test_threads_starting_together_share_one_client_and_its_exception_classes(
    slow_exception_factory: None, make: Any
) -> None:
    start = threading.Barrier(8)
    seen: list[tuple[Any, type]] = []

    def first_use() -> None:
        start.wait()
        ddb = make("dynamodb")
        seen.append((ddb, ddb.exceptions.ConditionalCheckFailedException))

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert len(seen) == 8
    clients = {id(ddb) for ddb, _ in seen}
    assert len(clients) == 1
    ddb = seen[0][0]
    # what the client raises (it looks its class up on itself) is what every thread catches
    assert {cls for _, cls in seen} == {ddb.exceptions.from_code("ConditionalCheckFailedException")}


@pytest.mark.parametrize("make", [aws.client, aws.brief_client])
def test_clients_leave_parameter_checks_to_the_service(slow_exception_factory: None, make: Any) -> None:
    """botocore's client-side parameter validation was 6 % of a full-sync page's CPU (py-spy, BENCHMARKS.md);
    every request the product sends is built by code, and DynamoDB, SQS and S3 refuse a malformed one
    themselves (a ClientError, handled as any refusal), so nothing is written unchecked."""
    ddb = make("dynamodb")

    class Sent(Exception):
        """raised where the request would leave for the network: it was not refused on the client"""

    def stop(**_: Any) -> None:
        raise Sent

    ddb.meta.events.register("before-send.dynamodb.GetItem", stop)
    with pytest.raises(Sent):  # a ParamValidationError with client-side checks on
        ddb.get_item(TableName="t", Key={"pk": {"S": 12}})
