"""The reconcile command's resumable cursor (reconcile_run.py): one item per integration in the state table.

Item: pk `RECONCILE#<integration>`, sk `RECONCILE_CURSOR`; `doc` (JSON: page, last key, the export's poll
URL, the report so far), `expires_at` (TTL one day: the export's poll URL lives one day, an older cursor is
useless). Written by `efficy-sync reconcile --all` after each page, unconditionally (one CLI run at a time).
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..aws import client
from .dynamo import from_item, key, to_item

CURSOR_SK = "RECONCILE_CURSOR"
CURSOR_TTL_SECONDS = 86400


class CursorStore:
    """The resumable run's cursor: one item per integration in the state table (TTL one day)."""

    def __init__(self, table_name: str) -> None:
        self._table = table_name

    def _key(self, integration_id: str) -> dict[str, Any]:
        return key(f"RECONCILE#{integration_id}", CURSOR_SK)

    def load(self, integration_id: str) -> dict[str, Any] | None:
        item = client("dynamodb").get_item(TableName=self._table, Key=self._key(integration_id), ConsistentRead=True)
        doc = from_item(item.get("Item", {})).get("doc")
        return json.loads(doc) if doc else None

    def save(self, integration_id: str, cursor: dict[str, Any]) -> None:
        fields = {"doc": json.dumps(cursor, separators=(",", ":")), "expires_at": int(time.time()) + CURSOR_TTL_SECONDS}
        client("dynamodb").put_item(TableName=self._table, Item={**self._key(integration_id), **to_item(fields)})

    def clear(self, integration_id: str) -> None:
        client("dynamodb").delete_item(TableName=self._table, Key=self._key(integration_id))
