"""Per-person sync state: what we last pushed to APSIS One, the Efficy change stamp, the last outcome.

One item per integration and person (pk="PERSON#<integration>#<key>", sk="STATE"). The whole state is one
JSON document; a few attributes sit beside it for conditions and for the health report. Writes are
conditional on the Efficy change stamp, so a late message can never move a person's state backwards.
"""

from __future__ import annotations

import json
from typing import Any

from ..aws import client
from ..consent import normalise_stamp
from ..state import PersonState


class StaleWrite(Exception):
    """A newer change of this person was already stored; the stored state wins."""


def _key(integration_id: str, person_key: int | str) -> dict[str, Any]:
    return {"pk": {"S": f"PERSON#{integration_id}#{person_key}"}, "sk": {"S": "STATE"}}


class PersonStateStore:
    def __init__(self, table_name: str) -> None:
        self._table = table_name

    def get(self, integration_id: str, person_key: int | str) -> PersonState | None:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key=_key(integration_id, person_key), ConsistentRead=True)
            .get("Item")
        )
        return self._decode(item) if item else None

    def get_many(self, integration_id: str, keys: list[int]) -> dict[int, PersonState]:
        """BatchGetItem in chunks of 100: one round trip per batch of persons, not one per person."""
        out: dict[int, PersonState] = {}
        ddb = client("dynamodb")
        for start in range(0, len(keys), 100):
            request = {
                self._table: {
                    "Keys": [_key(integration_id, k) for k in keys[start : start + 100]],
                    "ConsistentRead": True,
                }
            }
            while request:
                response = ddb.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    state = self._decode(item)
                    out[int(state.person_key)] = state
                request = response.get("UnprocessedKeys") or {}
        return out

    def put(self, state: PersonState) -> None:
        """Store `state` unless a newer Efficy change of this person is already stored (then StaleWrite)."""
        stamp = normalise_stamp(state.change_stamp or "")
        item = {
            **_key(state.integration_id, state.person_key),
            "doc": {"S": state.model_dump_json()},
            "stamp": {"S": stamp},
            "outcome": {"S": state.last_outcome or ""},
            "error_category": {"S": state.error_category or ""},
        }
        ddb = client("dynamodb")
        try:
            ddb.put_item(
                TableName=self._table,
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR #s <= :s",
                ExpressionAttributeNames={"#s": "stamp"},
                ExpressionAttributeValues={":s": {"S": stamp}},
            )
        except ddb.exceptions.ConditionalCheckFailedException as exc:
            raise StaleWrite(f"person {state.person_key}: stored state is newer than {stamp}") from exc

    def scan(self, integration_id: str) -> list[PersonState]:
        """Every stored person of an integration (for health reports and tests; not on a hot path)."""
        pages = (
            client("dynamodb")
            .get_paginator("scan")
            .paginate(
                TableName=self._table,
                FilterExpression="begins_with(pk, :p) AND sk = :s",
                ExpressionAttributeValues={":p": {"S": f"PERSON#{integration_id}#"}, ":s": {"S": "STATE"}},
            )
        )
        return [self._decode(item) for page in pages for item in page.get("Items", [])]

    @staticmethod
    def _decode(item: dict[str, Any]) -> PersonState:
        return PersonState.model_validate(json.loads(item["doc"]["S"]))
