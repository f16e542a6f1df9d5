"""Integration configs in DynamoDB, with every applied version kept (who applied it, and when).

Items: pk="CONFIG#<id>", sk="CURRENT" points at the live version; sk="V#<000042>" holds each version.
Both are written in one transaction guarded on the previous version, so two admins applying at once
cannot silently overwrite each other.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from ..aws import client
from ..config import IntegrationConfig


class ConfigConflict(Exception):
    """Someone applied another version in between: read again and retry."""


class UnknownIntegration(KeyError):
    pass


class ConfigStore:
    def __init__(self, table_name: str, *, cache_seconds: float = 0.0) -> None:
        self._table = table_name
        self._cache: dict[str, tuple[float, IntegrationConfig, int]] = {}
        self._cache_seconds = cache_seconds

    @staticmethod
    def _pk(integration_id: str) -> dict[str, str]:
        return {"S": f"CONFIG#{integration_id}"}

    def current(self, integration_id: str) -> tuple[IntegrationConfig, int]:
        """The live config and its version; cached briefly because every webhook and batch reads it."""
        hit = self._cache.get(integration_id)
        if hit and time.monotonic() - hit[0] < self._cache_seconds:
            return hit[1], hit[2]
        item = (
            client("dynamodb")
            .get_item(
                TableName=self._table, Key={"pk": self._pk(integration_id), "sk": {"S": "CURRENT"}}, ConsistentRead=True
            )
            .get("Item")
        )
        if not item:
            raise UnknownIntegration(integration_id)
        cfg = IntegrationConfig.model_validate(json.loads(item["body"]["S"]))
        version = int(item["version"]["N"])
        self._cache[integration_id] = (time.monotonic(), cfg, version)
        return cfg, version

    def get(self, integration_id: str) -> IntegrationConfig:
        return self.current(integration_id)[0]

    def put(self, cfg: IntegrationConfig, *, applied_by: str, comment: str = "") -> int:
        """Store `cfg` as a new version and make it current. Returns the new version number."""
        try:
            _, previous = self.current(integration_id=cfg.integration_id)
        except UnknownIntegration:
            previous = 0
        version = previous + 1
        body = json.dumps(cfg.model_dump(mode="json", exclude_none=True), sort_keys=True)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        attrs = {
            "body": {"S": body},
            "version": {"N": str(version)},
            "applied_at": {"S": now},
            "applied_by": {"S": applied_by},
            "comment": {"S": comment},
        }
        pk = self._pk(cfg.integration_id)
        condition = "attribute_not_exists(pk)" if previous == 0 else "version = :prev"
        current: dict[str, Any] = {
            "Put": {
                "TableName": self._table,
                "Item": {"pk": pk, "sk": {"S": "CURRENT"}, **attrs},
                "ConditionExpression": condition,
            }
        }
        if previous:
            current["Put"]["ExpressionAttributeValues"] = {":prev": {"N": str(previous)}}
        history = {
            "Put": {
                "TableName": self._table,
                "Item": {"pk": pk, "sk": {"S": f"V#{version:06d}"}, **attrs},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        ddb = client("dynamodb")
        try:
            ddb.transact_write_items(TransactItems=[current, history])
        except ddb.exceptions.TransactionCanceledException as exc:
            raise ConfigConflict(f"{cfg.integration_id}: another version was applied meanwhile") from exc
        self._cache.pop(cfg.integration_id, None)
        return version

    def history(self, integration_id: str) -> list[dict[str, Any]]:
        """Every applied version, oldest first, without bodies."""
        pages = (
            client("dynamodb")
            .get_paginator("query")
            .paginate(
                TableName=self._table,
                KeyConditionExpression="pk = :pk AND begins_with(sk, :v)",
                ExpressionAttributeValues={":pk": self._pk(integration_id), ":v": {"S": "V#"}},
            )
        )
        return [
            {
                "version": int(item["version"]["N"]),
                "applied_at": item["applied_at"]["S"],
                "applied_by": item["applied_by"]["S"],
                "comment": item.get("comment", {}).get("S", ""),
            }
            for page in pages
            for item in page.get("Items", [])
        ]

    def version(self, integration_id: str, version: int) -> IntegrationConfig:
        item = (
            client("dynamodb")
            .get_item(TableName=self._table, Key={"pk": self._pk(integration_id), "sk": {"S": f"V#{version:06d}"}})
            .get("Item")
        )
        if not item:
            raise UnknownIntegration(f"{integration_id} v{version}")
        return IntegrationConfig.model_validate(json.loads(item["body"]["S"]))

    def list_ids(self) -> list[str]:
        pages = (
            client("dynamodb")
            .get_paginator("scan")
            .paginate(
                TableName=self._table,
                FilterExpression="sk = :c",
                ExpressionAttributeValues={":c": {"S": "CURRENT"}},
                ProjectionExpression="pk",
            )
        )
        return sorted(item["pk"]["S"].split("#", 1)[1] for page in pages for item in page.get("Items", []))
