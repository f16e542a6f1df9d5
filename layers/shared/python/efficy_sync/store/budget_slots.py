"""The counters of the shared APSIS One request budget (budget.py decides how many requests to take and when).

Item: pk "BUDGET#<account hash>", sk "SLOT#<slot number>" (one 100 ms slot since the epoch): `used` (requests
taken from the slot, bumped by a conditional ADD that never passes the slot's cap) and `expires_at` (TTL,
SLOT_TTL_SECONDS after the slot). Written by every worker that sends profile writes to that APSIS account.
"""

from __future__ import annotations

from ..aws import client
from .dynamo import from_item, key, to_item

SLOT_TTL_SECONDS = 3600


class BudgetSlots:
    """The per-slot counters of one APSIS account's budget."""

    def __init__(self, table_name: str, account: str) -> None:
        self._table = table_name
        self._pk = f"BUDGET#{account}"

    def take(self, slot: int, n: int, cap: int, slot_start: float) -> int | None:
        """Adds `n` to the slot's count unless that passes `cap`: None when taken, else what the slot had used
        already (the update was refused). `slot_start` (epoch seconds) dates the item's expiry."""
        ddb = client("dynamodb")
        try:
            ddb.update_item(
                TableName=self._table,
                Key=key(self._pk, f"SLOT#{slot}"),
                UpdateExpression="ADD #u :n SET expires_at = if_not_exists(expires_at, :e)",
                ConditionExpression="attribute_not_exists(#u) OR #u <= :room",
                ExpressionAttributeNames={"#u": "used"},
                ExpressionAttributeValues=to_item(
                    {":n": n, ":room": cap - n, ":e": int(slot_start) + SLOT_TTL_SECONDS}
                ),
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException as exc:
            item = from_item(exc.response.get("Item") or {})
            return int(item.get("used", cap))
        return None
