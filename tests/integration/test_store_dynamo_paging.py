"""The store's paging helpers against moto (in-process): a partition larger than one DynamoDB page (1 MB) is
read whole, `limit` stops early, and the breaker's release deletes every window, not only the first page's."""

from __future__ import annotations

from typing import Any

from efficy_sync import aws
from efficy_sync.store import dynamo
from efficy_sync.store.removals import RemovalBreaker

from tests.integration.test_fullsync_runs import TABLE, aws_env  # noqa: F401 (aws_env: moto's tables and queue)

BIG = "x" * 100_000  # 12 of these pass DynamoDB's (and moto's) 1 MB page


def put(pk: str, sk: str, **fields: object) -> None:
    aws.client("dynamodb").put_item(TableName=TABLE, Item={**dynamo.key(pk, sk), **dynamo.to_item(fields)})


def test_query_all_reads_past_the_first_page_and_stops_at_the_limit(aws_env: dict[str, Any]) -> None:
    for i in range(12):
        put("P", f"{i:02d}", blob=BIG, n=i)
    first = aws.client("dynamodb").query(
        TableName=TABLE, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": "P"}}
    )
    assert "LastEvaluatedKey" in first  # the partition really is more than one page

    items = list(dynamo.query_all(TABLE, "pk = :pk", {":pk": "P"}, consistent=True))
    assert [item["n"] for item in items] == list(range(12))
    assert [i["sk"] for i in dynamo.query_all(TABLE, "pk = :pk", {":pk": "P"}, forward=False, limit=3)] == [
        "11",
        "10",
        "09",
    ]
    assert dynamo.count_all(TABLE, "pk = :pk", {":pk": "P"}) == 12


def test_the_release_deletes_every_window_of_the_breaker(aws_env: dict[str, Any]) -> None:
    for window in range(12):
        put("BREAKER#acme", f"WINDOW#{window}", removals=1, padding=BIG)
    put("BREAKER#acme", "TRIPPED", removals=12, limit=5)

    RemovalBreaker(TABLE).reset("acme")

    assert list(dynamo.query_all(TABLE, "pk = :pk", {":pk": "BREAKER#acme"}, consistent=True)) == []
