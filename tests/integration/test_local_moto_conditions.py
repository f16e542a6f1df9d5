"""moto's condition expressions on the local stack (local/moto_speed.py): parsed once per expression, names and
values, with the same answers as moto's own parse: a condition met or not per item, unused names refused, a
malformed expression refused every time."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync_tools.local.aws import MotoServer, client

REGION = "eu-west-1"


def _table(ddb: Any, name: str) -> str:
    ddb.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    return name


def _put(pk: str, revision: int | None, *, expected: int | None, table: str = "conditions") -> dict[str, Any]:
    """The person-state put of store/batch_writes.py: new (no revision yet) or at the revision read."""
    put: dict[str, Any] = {
        "TableName": table,
        "Item": {"pk": {"S": pk}, **({"r": {"N": str(revision)}} if revision is not None else {})},
        "ExpressionAttributeNames": {"#r": "r"},
    }
    if expected is None:
        put["ConditionExpression"] = "attribute_not_exists(#r)"
    else:
        put["ConditionExpression"] = "#r = :r"
        put["ExpressionAttributeValues"] = {":r": {"N": str(expected)}}
    return put


def _revision(ddb: Any, pk: str, table: str = "conditions") -> int | None:
    item = ddb.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True).get("Item")
    return int(item["r"]["N"]) if item and "r" in item else None


@pytest.fixture
def lexed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every expression moto lexes (the server runs in this process): what the memo spares."""
    from moto.dynamodb.comparisons import ConditionExpressionParser

    seen: list[str] = []
    lex = ConditionExpressionParser._lex_condition_expression

    def counting(self: Any) -> Any:
        seen.append(self.condition_expression)
        return lex(self)

    monkeypatch.setattr(ConditionExpressionParser, "_lex_condition_expression", counting)
    return seen


def test_the_same_condition_on_many_items_is_parsed_once_and_judged_per_item(
    moto: MotoServer, lexed: list[str]
) -> None:
    ddb = client("dynamodb", moto.endpoint, REGION)
    _table(ddb, "conditions")
    ddb.put_item(TableName="conditions", Item={"pk": {"S": "taken"}, "r": {"N": "1"}})
    firsts = [{"Put": _put(f"p{n}", 1, expected=None)} for n in range(20)]
    ddb.transact_write_items(TransactItems=firsts)
    assert [_revision(ddb, f"p{n}") for n in range(20)] == [1] * 20
    lexed_once = len(lexed)
    # the same condition again, on other items: met for new ones, not met where the item has a revision
    ddb.transact_write_items(TransactItems=[{"Put": _put(f"q{n}", 1, expected=None)} for n in range(20)])
    with pytest.raises(ClientError) as refused:
        ddb.put_item(**_put("taken", 2, expected=None))
    assert refused.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert len(lexed) == lexed_once  # no expression lexed again
    assert _revision(ddb, "taken") == 1
    # the revision guard: values are part of what is kept, so each value is judged as itself
    ddb.put_item(**_put("p0", 2, expected=1))
    with pytest.raises(ClientError) as stale:
        ddb.put_item(**_put("p1", 3, expected=2))  # p1 is at 1
    assert stale.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    ddb.put_item(**_put("p2", 2, expected=1))
    assert (_revision(ddb, "p0"), _revision(ddb, "p1"), _revision(ddb, "p2")) == (2, 1, 2)


def test_unused_names_and_invalid_expressions_are_refused_every_time(moto: MotoServer) -> None:
    ddb = client("dynamodb", moto.endpoint, REGION)
    table = _table(ddb, "refusals")
    unused = {**_put("u", 1, expected=None, table=table), "ExpressionAttributeNames": {"#r": "r", "#x": "x"}}
    invalid = {**_put("i", 1, expected=None, table=table), "ConditionExpression": "(attribute_not_exists(#r)"}
    broken: list[str] = []
    for _ in range(2):  # the second time from what the first one kept, if anything was kept
        with pytest.raises(ClientError) as caught:
            ddb.put_item(**unused)
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        assert "#x" in caught.value.response["Error"]["Message"]
        with pytest.raises(ClientError) as refused:
            ddb.put_item(**invalid)
        broken.append(refused.value.response["Error"]["Code"])
    assert broken[0] == broken[1]  # moto's own answer to a malformed condition (a 500), again: nothing kept
    assert _revision(ddb, "u", table) is None and _revision(ddb, "i", table) is None
