"""moto's TransactWriteItems on the local stack (local/moto_speed.py): no copy of the table, same all-or-nothing.

moto deep-copied every table a transaction writes to (seconds per transaction at 200,000 items); the local
stack journals the items the transaction names instead. These check that a failed condition still leaves
every named item as it was (new ones absent, updated and overwritten ones unchanged), that a transaction
that passes applies everything, and that the table object is no longer replaced by a copy.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from efficy_sync_tools.local.aws import MotoServer, client

REGION = "eu-west-1"


def _table(ddb: Any, name: str, range_key: bool) -> str:
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    if range_key:
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "sk", "AttributeType": "S"})
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", KeySchema=keys, AttributeDefinitions=attrs)
    return name


def _key(pk: str, range_key: bool) -> dict[str, Any]:
    return {"pk": {"S": pk}, **({"sk": {"S": "state"}} if range_key else {})}


def _item(pk: str, range_key: bool, **values: str) -> dict[str, Any]:
    return {**_key(pk, range_key), **{k: {"S": v} for k, v in values.items()}}


def _all(ddb: Any, table: str) -> list[dict[str, Any]]:
    return sorted(ddb.scan(TableName=table, ConsistentRead=True)["Items"], key=lambda i: i["pk"]["S"])


def _transaction(table: str, range_key: bool, guard: str) -> list[dict[str, Any]]:
    return [
        {"Put": {"TableName": table, "Item": _item("new", range_key, v="created")}},
        {
            "Update": {
                "TableName": table,
                "Key": _key("updated", range_key),
                "UpdateExpression": "SET v = :v",
                "ExpressionAttributeValues": {":v": {"S": "changed"}},
            }
        },
        {"Put": {"TableName": table, "Item": _item("overwritten", range_key, v="replaced")}},
        {"Delete": {"TableName": table, "Key": _key("deleted", range_key)}},
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": _key("guard", range_key),
                "ConditionExpression": "v = :ok",
                "ExpressionAttributeValues": {":ok": {"S": guard}},
            }
        },
    ]


@pytest.mark.parametrize("range_key", [True, False], ids=["hash-and-range", "hash-only"])
def test_a_failed_condition_leaves_every_item_as_it_was(moto: MotoServer, range_key: bool) -> None:
    from moto.dynamodb.models import dynamodb_backends

    ddb = client("dynamodb", moto.endpoint, REGION)
    table = _table(ddb, f"rollback-{range_key}", range_key)
    for pk in ("updated", "overwritten", "deleted", "untouched", "guard"):
        ddb.put_item(TableName=table, Item=_item(pk, range_key, v="before"))
    before = _all(ddb, table)
    table_object = dynamodb_backends["123456789012"][REGION].tables[table]
    with pytest.raises(ClientError) as caught:
        ddb.transact_write_items(TransactItems=_transaction(table, range_key, guard="never"))
    assert caught.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _all(ddb, table) == before
    assert dynamodb_backends["123456789012"][REGION].tables[table] is table_object  # not a restored copy
    # and the items still answer point reads (the table's own index of them is intact)
    assert ddb.get_item(TableName=table, Key=_key("updated", range_key), ConsistentRead=True)["Item"]["v"] == {
        "S": "before"
    }
    assert "Item" not in ddb.get_item(TableName=table, Key=_key("new", range_key), ConsistentRead=True)


def test_a_transaction_that_passes_applies_everything(moto: MotoServer) -> None:
    ddb = client("dynamodb", moto.endpoint, REGION)
    table = _table(ddb, "applied", range_key=True)
    for pk in ("updated", "overwritten", "deleted", "guard"):
        ddb.put_item(TableName=table, Item=_item(pk, True, v="before"))
    ddb.transact_write_items(TransactItems=_transaction(table, True, guard="before"))
    assert {i["pk"]["S"]: i.get("v", {}).get("S") for i in _all(ddb, table)} == {
        "new": "created",
        "updated": "changed",
        "overwritten": "replaced",
        "guard": "before",
    }


def test_the_table_is_not_deep_copied(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.dynamodb.models.table import Table

    copies: list[int] = []
    monkeypatch.setattr(Table, "__deepcopy__", lambda self, memo: copies.append(1) or self, raising=False)
    ddb = client("dynamodb", moto.endpoint, REGION)
    table = _table(ddb, "no-copy", range_key=True)
    ddb.put_item(TableName=table, Item=_item("guard", True, v="before"))
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": _item("a", True, v="x")}}])
    with pytest.raises(ClientError):
        ddb.transact_write_items(TransactItems=_transaction(table, True, guard="never"))
    assert copies == []
