"""moto inside the test process (the `in_process_aws` fixture) is safe for concurrent DynamoDB requests.

The full-sync harness runs the product's thread pools (a page's chunks, the seams' windows) against moto in
this process. Its DynamoDB backend is plain dicts: an UpdateItem deep-copying an item while another thread
adds an attribute to it failed with `RuntimeError: dictionary changed size during iteration` (CI at stop 42,
test_breaker_release_scope, two seam windows counting into one run record). Real DynamoDB is neither, so the
fixture serialises moto's DynamoDB requests as the local stack's server does (local/moto_threads.py).
"""

from __future__ import annotations

import boto3
import pytest

from tests.integration.test_local_moto_threads import hold_first_call, second_got_in
from tests.support import create_pk_sk_table

TABLE = "in-process-threads"


def test_a_request_waits_while_another_is_inside_the_in_process_dynamodb_backend(
    in_process_aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic: an UpdateItem is held inside moto's backend; another on the same item must not get in."""
    from moto.dynamodb.models import DynamoDBBackend

    create_pk_sk_table(TABLE, in_process_aws)
    ddb = boto3.client("dynamodb", region_name=in_process_aws)
    key = {"pk": {"S": "RUN"}, "sk": {"S": "1"}}
    ddb.put_item(TableName=TABLE, Item=key)
    inside, release = hold_first_call(monkeypatch, DynamoDBBackend, "update_item")
    errors: list[BaseException] = []

    def add(name: str) -> None:
        try:
            boto3.client("dynamodb", region_name=in_process_aws).update_item(
                TableName=TABLE,
                Key=key,
                UpdateExpression="ADD #c :one",
                ExpressionAttributeNames={"#c": name},
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        except BaseException as exc:  # reported by the assertions below
            errors.append(exc)

    names = iter(("first", "second"))
    got_in = second_got_in(lambda: add(next(names)), inside, release)
    assert not got_in, "an UpdateItem ran while another was inside moto's DynamoDB backend (no lock)"
    assert errors == []
    item = ddb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)["Item"]
    assert (item["first"], item["second"]) == ({"N": "1"}, {"N": "1"})
