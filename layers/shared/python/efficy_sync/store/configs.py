"""Integration configs in DynamoDB, with every applied version kept (who applied it, and when).

Items: pk="CONFIG#<id>", sk="CURRENT" points at the live version; sk="V#<000042>" holds each version.
Both are written in one transaction guarded on the previous version, so two admins applying at once
cannot silently overwrite each other.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from ..aws import client
from ..config import IntegrationConfig
from .dynamo import from_item, key, query_all, scan_all, to_item

#: a version's body, at most: DynamoDB refuses an item over 400 KB, and the item also holds who applied it, when,
#: and the comment
MAX_BODY_BYTES = 360_000


def stored_body(cfg: IntegrationConfig) -> str:
    """What a version stores: only what the admin set (a default is not written down, so a Lambda of an older
    version than the CLI that applied the config still loads it), and a value set on purpose is kept as set."""
    return json.dumps(cfg.model_dump(mode="json", exclude_none=True, exclude_unset=True), sort_keys=True)


def too_large(cfg: IntegrationConfig) -> str | None:
    """Why the config cannot be stored (`config validate` says it before `config apply` tries), or None."""
    size = len(stored_body(cfg).encode())
    if size <= MAX_BODY_BYTES:
        return None
    return f"the config is {size // 1000:,} KB stored; a version holds at most {MAX_BODY_BYTES // 1000} KB"


def _raise(exc: Exception) -> IntegrationConfig:
    raise exc


class ConfigConflict(Exception):
    """Someone applied another version in between: read again and retry."""


class UnknownIntegration(KeyError):
    pass


class ConfigStore:
    """`cache_seconds`: how long a read config is served without asking DynamoDB. `check_version`: ask every
    time, but only for the live version number (a projected read): the config is parsed again only when it
    changed. A worker that decides who is created or opted in must see an applied version at once: with a
    minute's cache, persons a new sync condition excluded were still created for that minute."""

    def __init__(self, table_name: str, *, cache_seconds: float = 0.0, check_version: bool = False) -> None:
        self._table = table_name
        self._cache: dict[str, tuple[float, IntegrationConfig, int]] = {}
        self._cache_seconds = cache_seconds
        self._check_version = check_version

    @staticmethod
    def _pk(integration_id: str) -> str:
        return f"CONFIG#{integration_id}"

    def current(self, integration_id: str) -> tuple[IntegrationConfig, int]:
        """The live config and its version; cached briefly because every webhook and batch reads it."""
        hit = self._cache.get(integration_id)
        if hit and self._check_version:
            if self._live_version(integration_id) == hit[2]:
                return hit[1], hit[2]
        elif hit and time.monotonic() - hit[0] < self._cache_seconds:
            return hit[1], hit[2]
        item = from_item(
            client("dynamodb")
            .get_item(TableName=self._table, Key=key(self._pk(integration_id), "CURRENT"), ConsistentRead=True)
            .get("Item", {})
        )
        if not item:
            raise UnknownIntegration(integration_id)
        cfg = IntegrationConfig.model_validate(json.loads(item["body"]))
        version = int(item["version"])
        self._cache[integration_id] = (time.monotonic(), cfg, version)
        return cfg, version

    def _live_version(self, integration_id: str) -> int | None:
        item = (
            client("dynamodb")
            .get_item(
                TableName=self._table,
                Key=key(self._pk(integration_id), "CURRENT"),
                ConsistentRead=True,
                ProjectionExpression="#v",
                ExpressionAttributeNames={"#v": "version"},
            )
            .get("Item")
        )
        return int(item["version"]["N"]) if item and "N" in item.get("version", {}) else None

    def get(self, integration_id: str) -> IntegrationConfig:
        return self.current(integration_id)[0]

    def put(self, cfg: IntegrationConfig, *, applied_by: str, comment: str = "") -> int:
        """Store `cfg` as a new version and make it current. Returns the new version number."""
        try:
            _, previous = self.current(integration_id=cfg.integration_id)
        except UnknownIntegration:
            previous = 0
        version = previous + 1
        body = stored_body(cfg)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        attrs = to_item(
            {"body": body, "version": version, "applied_at": now, "applied_by": applied_by, "comment": comment}
        )
        pk = self._pk(cfg.integration_id)
        condition = "attribute_not_exists(pk)" if previous == 0 else "version = :prev"
        current: dict[str, Any] = {
            "Put": {
                "TableName": self._table,
                "Item": {**key(pk, "CURRENT"), **attrs},
                "ConditionExpression": condition,
            }
        }
        if previous:
            current["Put"]["ExpressionAttributeValues"] = to_item({":prev": previous})
        history = {
            "Put": {
                "TableName": self._table,
                "Item": {**key(pk, f"V#{version:06d}"), **attrs},
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
        items = query_all(
            self._table, "pk = :pk AND begins_with(sk, :v)", {":pk": self._pk(integration_id), ":v": "V#"}
        )
        return [
            {
                "version": int(item["version"]),
                "applied_at": item["applied_at"],
                "applied_by": item["applied_by"],
                "comment": item.get("comment", ""),
            }
            for item in items
        ]

    def version(self, integration_id: str, version: int) -> IntegrationConfig:
        item = from_item(
            client("dynamodb")
            .get_item(TableName=self._table, Key=key(self._pk(integration_id), f"V#{version:06d}"))
            .get("Item", {})
        )
        if not item:
            raise UnknownIntegration(f"{integration_id} v{version}")
        return IntegrationConfig.model_validate(json.loads(item["body"]))

    def scheduled(self) -> dict[str, Callable[[], IntegrationConfig]]:
        """The live configs that have a query tag with a schedule of its own, read in one Scan (the sweeper
        runs every few minutes, and a GetItem per integration would make each sweep grow with the account).
        Each is validated when called, so that one config that no longer loads fails alone."""
        items = scan_all(self._table, "sk = :c", {":c": "CURRENT"}, projection="pk, body")
        found: dict[str, Callable[[], IntegrationConfig]] = {}
        for item in items:
            integration_id = str(item["pk"]).split("#", 1)[1]
            try:
                body = json.loads(item["body"])
            except ValueError as exc:  # unreadable: reported under its id, the others still run
                found[integration_id] = partial(_raise, exc)
                continue
            queries = (body.get("tags") or {}).get("queries") or []
            if any(isinstance(q, dict) and q.get("schedule") for q in queries):  # most have none: not validated
                found[integration_id] = partial(IntegrationConfig.model_validate, body)
        return dict(sorted(found.items()))

    def list_ids(self) -> list[str]:
        items = scan_all(self._table, "sk = :c", {":c": "CURRENT"}, projection="pk")
        return sorted(str(item["pk"]).split("#", 1)[1] for item in items)
