"""The one DynamoDB helper of the store: typed values in and out, and the loops every paging call needs.

Why boto3's TypeSerializer/TypeDeserializer: they know every DynamoDB type, so no store writes an attribute value by
hand. They are imported on first use, not at import: `boto3.dynamodb` pulls in boto3, which a handler that
answers a bad request never needs (cold start). At the boundary the store keeps the Python types its callers
always had: a number reads back as `int` (or `float` when it has a fraction), never `Decimal`; a binary as
`bytes`; a float is written as the Decimal of its text (boto3 refuses floats).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from functools import cache
from typing import Any

from ..aws import client

#: BatchWriteItem takes at most 25 items, BatchGetItem at most 100 keys
BATCH_WRITE_ITEMS = 25
BATCH_GET_KEYS = 100


class BatchGetIncomplete(Exception):
    """DynamoDB kept some keys of a read unprocessed (throttling) after every retry: the caller fails (and is
    retried) rather than read an unanswered key as "no item"."""

    throttled = True  # aws.transient_aws_error: the full-sync tasks raise it as TransientError (retried)


class BatchWriteIncomplete(Exception):
    """DynamoDB kept some items of a batch unprocessed (throttling) after every retry: the caller's step fails
    and is retried; nothing half-written is reported as done."""

    throttled = True  # without it a page or step failed the run at once (the Retry names TransientError only)


@cache
def _serializer() -> Any:
    from boto3.dynamodb.types import TypeSerializer

    return TypeSerializer()


@cache
def _deserializer() -> Any:
    from boto3.dynamodb.types import TypeDeserializer

    return TypeDeserializer()


def _storable(value: Any) -> Any:
    """What TypeSerializer accepts: floats as Decimal (recursively)."""
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, Mapping):
        return {k: _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _python(value: Any) -> Any:
    """Decimal -> int or float, Binary -> bytes, recursively: the types callers had before the serializer."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _python(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_python(v) for v in value]
    if isinstance(value, set | frozenset):
        return {_python(v) for v in value}
    raw = getattr(value, "value", None)  # boto3's Binary
    return raw if isinstance(raw, bytes) else value


def attr(value: Any) -> dict[str, Any]:
    """One Python value as a DynamoDB attribute value. Strings, booleans and integers (nearly every attribute a
    page writes) are written here as TypeSerializer writes them, without its chain of type checks: serializing
    person states was about 4 % of a full-sync page's CPU (py-spy, BENCHMARKS.md)."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is bool:
        return {"BOOL": value}
    if kind is int:
        return {"N": str(value)}
    return dict(_serializer().serialize(_storable(value)))


def plain(value: Mapping[str, Any]) -> Any:
    """One DynamoDB attribute value as Python (module docstring for the types)."""
    return _python(_deserializer().deserialize(value))


def to_item(fields: Mapping[str, Any]) -> dict[str, Any]:
    """A Python mapping as a DynamoDB item (or Key, or ExpressionAttributeValues)."""
    return {name: attr(value) for name, value in fields.items()}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as a Python dict."""
    return {name: plain(value) for name, value in item.items()}


def key(pk: str, sk: str) -> dict[str, Any]:
    """The table key of an item of either table (both are keyed `pk`/`sk`, strings)."""
    return to_item({"pk": pk, "sk": sk})


def query_all(
    table: str,
    condition: str,
    values: Mapping[str, Any],
    *,
    names: Mapping[str, str] | None = None,
    index: str | None = None,
    consistent: bool = False,
    forward: bool = True,
    projection: str | None = None,
    limit: int | None = None,
    ddb: Any = None,
) -> Iterator[dict[str, Any]]:
    """Every item matching a Query, page after page, as Python dicts; at most `limit` items. `values` are
    Python values (serialized here); `ddb`: the client to use (default the shared one)."""
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": to_item(values),
        "ScanIndexForward": forward,
    }
    if names:
        params["ExpressionAttributeNames"] = dict(names)
    if index:
        params["IndexName"] = index
    if consistent:
        params["ConsistentRead"] = True
    if projection:
        params["ProjectionExpression"] = projection
    yield from _pages(ddb or client("dynamodb"), "query", params, limit)


def scan_all(
    table: str, condition: str, values: Mapping[str, Any], *, projection: str | None = None
) -> Iterator[dict[str, Any]]:
    """Every item a filtered Scan finds, page after page, as Python dicts (reports and repairs only)."""
    params: dict[str, Any] = {
        "TableName": table,
        "FilterExpression": condition,
        "ExpressionAttributeValues": to_item(values),
    }
    if projection:
        params["ProjectionExpression"] = projection
    yield from _pages(client("dynamodb"), "scan", params, None)


def count_all(table: str, condition: str, values: Mapping[str, Any], *, consistent: bool = True) -> int:
    """How many items a Query matches, counted by DynamoDB page after page (no item is read back)."""
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": condition,
        "ExpressionAttributeValues": to_item(values),
        "Select": "COUNT",
        "ConsistentRead": consistent,
    }
    ddb = client("dynamodb")
    total = 0
    while True:
        page = ddb.query(**params)
        total += int(page.get("Count", 0))
        if "LastEvaluatedKey" not in page:
            return total
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _pages(ddb: Any, operation: str, params: dict[str, Any], limit: int | None) -> Iterator[dict[str, Any]]:
    left = limit
    while True:
        if left is not None:
            params["Limit"] = left
        page = getattr(ddb, operation)(**params)
        for item in page.get("Items", []):
            yield from_item(item)
            if left is not None:
                left -= 1
                if left <= 0:
                    return
        if "LastEvaluatedKey" not in page:
            return
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _backing_off(attempts: int, backoff: float) -> Iterator[int]:
    """Attempt numbers 1..attempts, sleeping a jittered, doubling delay (full jitter, at most 5 s) before each
    one after the first: for a loop that breaks once DynamoDB has processed everything (no sleep after that,
    nor after the last attempt)."""
    delay = backoff
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 5.0)
        yield attempt


def batch_get(
    table: str,
    keys: Sequence[Mapping[str, Any]],
    *,
    projection: str | None = None,
    attempts: int = 8,
    backoff: float = 0.05,
) -> Iterator[dict[str, Any]]:
    """The items of `keys` (DynamoDB keys), read consistently, BATCH_GET_KEYS a call; as Python dicts, in no
    particular order (a key with no item yields nothing). UnprocessedKeys (throttling) are asked again after a
    jittered, doubling backoff, as AWS advises: asked again at once, a throttled table was hit again at once,
    and every page's chunk spun on it. BatchGetIncomplete when keys are still unprocessed after `attempts`
    calls: a key left out would read as "no item" (a person never synced), so it is never dropped silently."""
    ddb = client("dynamodb")
    for start in range(0, len(keys), BATCH_GET_KEYS):
        asked: dict[str, Any] = {"Keys": list(keys[start : start + BATCH_GET_KEYS]), "ConsistentRead": True}
        if projection:
            asked["ProjectionExpression"] = projection
        request: dict[str, Any] = {table: asked}
        for _ in _backing_off(attempts, backoff):  # ask only what is left
            response = ddb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(table, []):
                yield from_item(item)
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            raise BatchGetIncomplete(f"{len(request.get(table, {}).get('Keys', []))} keys still unprocessed")


def batch_write(table: str, items: Sequence[Mapping[str, Any]], *, attempts: int = 8, backoff: float = 0.05) -> None:
    """Puts `items` (DynamoDB items) unconditionally, BATCH_WRITE_ITEMS a call; what DynamoDB leaves unprocessed
    (throttling) is sent again after a jittered, doubling backoff. BatchWriteIncomplete when some items are
    still unprocessed after `attempts` calls."""
    ddb = client("dynamodb")
    for start in range(0, len(items), BATCH_WRITE_ITEMS):
        request: dict[str, Any] = {
            table: [{"PutRequest": {"Item": i}} for i in items[start : start + BATCH_WRITE_ITEMS]]
        }
        for _ in _backing_off(attempts, backoff):  # send only what is left
            request = ddb.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
            if not request:
                break
        else:
            raise BatchWriteIncomplete(f"{len(request.get(table, []))} items still unprocessed")
