"""moto's BatchGetItem answered by the local stack's short path (local/moto_fastpath.py) is moto's answer.

Every full-sync chunk reads its states with one BatchGetItem of up to 100 keys; moto's own path spent most of
its time in its generic response serializer. The short path must answer byte for byte what moto's path does
(the same request with ReturnConsumedCapacity goes through moto's path and is compared, capacity aside), and
leave every option it does not know and every error to moto.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync_tools.local.aws import MotoServer, client

REGION = "eu-west-1"


@pytest.fixture
def moto_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    from moto.dynamodb.responses import DynamoHandler

    calls: list[int] = []
    original = DynamoHandler.batch_get_item

    def counting(self: Any) -> Any:
        calls.append(1)
        return original(self)

    monkeypatch.setattr(DynamoHandler, "batch_get_item", counting)
    return calls


@pytest.fixture
def table(moto: MotoServer) -> Any:
    ddb = client("dynamodb", moto.endpoint, REGION)
    name = "states"
    if name not in ddb.list_tables()["TableNames"]:
        ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for k in range(60):
            item = {
                "pk": {"S": f"PERSON#x#{k}"},
                "sk": {"S": "STATE"},
                "doc": {"S": json.dumps({"k": k, "text": "é" * k})},
                "rev": {"N": str(k)},
                "n": {"N": "1.50"},
                "l": {"L": [{"S": "x"}, {"NULL": True}, {"M": {"b": {"BOOL": k % 2 == 0}}}]},
                "ss": {"SS": ["b", "a"]},
                "bin": {"B": bytes([k, 0, 255])},
            }
            ddb.put_item(TableName=name, Item=item)
    return ddb


def _keys(n: int) -> list[dict[str, Any]]:
    # every other key is absent (no OPTOUTS item): an answer holds only what exists
    return [{"pk": {"S": f"PERSON#x#{k}"}, "sk": {"S": sk}} for k in range(n) for sk in ("STATE", "OPTOUTS")][:100]


def _raw(ddb: Any, **request: Any) -> dict[str, Any]:
    captured: dict[str, bytes] = {}

    def grab(http_response: Any, **_: Any) -> None:
        captured["body"] = http_response.content

    ddb.meta.events.register("after-call.dynamodb.BatchGetItem", grab)
    try:
        ddb.batch_get_item(**request)
    finally:
        ddb.meta.events.unregister("after-call.dynamodb.BatchGetItem", grab)
    answer: dict[str, Any] = json.loads(captured["body"])
    return answer


def test_the_short_path_answers_what_moto_does(table: Any, moto_path_calls: list[int]) -> None:
    request = {"RequestItems": {"states": {"Keys": _keys(50), "ConsistentRead": True}}}
    fast = _raw(table, **request)
    assert moto_path_calls == []  # answered by the short path
    slow = _raw(table, **request, ReturnConsumedCapacity="TOTAL")
    assert moto_path_calls == [1]  # an option the short path leaves to moto
    assert len(fast["Responses"]["states"]) == 50
    assert fast == slow  # the same items, attribute types and order, the same (always sent) capacity


@pytest.mark.parametrize(
    ("request_items", "code"),
    [
        ({"states": {"Keys": _keys(1) * 2}}, "ValidationException"),  # duplicate keys
        ({"missing": {"Keys": _keys(1)}}, "ResourceNotFoundException"),
    ],
)
def test_errors_are_moto_s(table: Any, request_items: dict[str, Any], code: str) -> None:
    with pytest.raises(ClientError) as caught:
        table.batch_get_item(RequestItems=request_items)
    assert caught.value.response["Error"]["Code"] == code


def test_a_projection_is_left_to_moto(table: Any, moto_path_calls: list[int]) -> None:
    answer = table.batch_get_item(RequestItems={"states": {"Keys": _keys(3), "ProjectionExpression": "pk, rev"}})
    assert moto_path_calls == [1]
    assert all(set(item) == {"pk", "rev"} for item in answer["Responses"]["states"])
