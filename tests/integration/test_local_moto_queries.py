"""moto's Query on the local stack (local/moto_speed.py): a query on the table's key reads its partition only,
so its cost does not grow with the other partitions stored (a second integration's full sync after a first)."""

from __future__ import annotations

from typing import Any

import pytest
from efficy_sync_tools.local.aws import MotoServer, client

from tests.integration.test_local_moto_transactions import _table

REGION = "eu-west-1"


def _item(pk: str, sk: str | None) -> dict[str, Any]:
    return {"pk": {"S": pk}, **({"sk": {"S": sk}} if sk is not None else {}), "v": {"S": f"{pk}/{sk}"}}


@pytest.mark.parametrize("range_key", [True, False], ids=["hash-and-range", "hash-only"])
def test_a_key_query_reads_its_partition_only(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, range_key: bool
) -> None:
    from moto.dynamodb.models.table import Table

    candidates: list[int] = []
    patched = Table.all_items
    monkeypatch.setattr(Table, "all_items", lambda self: candidates.append(len(items := patched(self))) or items)
    ddb = client("dynamodb", moto.endpoint, REGION)
    table = _table(ddb, f"partition-{range_key}", range_key)
    for n in range(40):  # another integration's items
        ddb.put_item(TableName=table, Item=_item(f"other#{n}", "state" if range_key else None))
    wanted = [_item("mine", sk) for sk in ("a", "b", "c")] if range_key else [_item("mine", None)]
    for item in wanted:
        ddb.put_item(TableName=table, Item=item)

    found = ddb.query(
        TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "mine"}}
    )["Items"]
    missing = ddb.query(
        TableName=table, KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "none"}}
    )["Items"]

    assert found == wanted  # the same answer, in the range key's order
    assert missing == []
    assert candidates == [len(wanted), 0]  # not the 40 items of the other partitions


def test_a_query_in_reverse_and_a_scan_still_see_everything(moto: MotoServer) -> None:
    ddb = client("dynamodb", moto.endpoint, REGION)
    table = _table(ddb, "reverse", range_key=True)
    for pk in ("x", "y"):
        for sk in ("1", "2", "3"):
            ddb.put_item(TableName=table, Item=_item(pk, sk))
    items = ddb.query(
        TableName=table,
        KeyConditionExpression="pk = :p AND sk > :s",
        ExpressionAttributeValues={":p": {"S": "y"}, ":s": {"S": "1"}},
        ScanIndexForward=False,
    )["Items"]
    assert [i["sk"]["S"] for i in items] == ["3", "2"]
    assert len(ddb.scan(TableName=table)["Items"]) == 6
